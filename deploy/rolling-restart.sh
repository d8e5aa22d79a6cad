#!/usr/bin/env bash
# Restart the hub replicas one at a time without failing a call (docs/deploy.md, "Rolling restarts"):
# for each port, mark its upstream server `down` in the nginx config and reload nginx (new requests go
# to the others), stop the replica with SIGTERM (it finishes the calls it has, up to --shutdown-grace),
# start it, wait for /healthz, and put it back.
#
#   deploy/rolling-restart.sh                     # ports 8801 8802 8803, /etc/nginx/conf.d/agentchat.conf
#   NGINX_CONF=/etc/nginx/sites-enabled/agentchat PORTS="8801 8802" deploy/rolling-restart.sh
#
# Run as root on the host with nginx and the agentchat@PORT units (deploy/systemd/).
set -euo pipefail

NGINX_CONF=${NGINX_CONF:-/etc/nginx/conf.d/agentchat.conf}
PORTS=${PORTS:-8801 8802 8803}
SETTLE=${SETTLE:-2}  # seconds for nginx's old workers to finish the requests they hold after a reload

rotate() {  # rotate PORT out|in
    local port=$1 way=$2
    local line="^ *server 127\.0\.0\.1:${port}[ ;]"
    sed -i -E "/${line}/s/ down;/;/" "$NGINX_CONF"  # in
    if [ "$way" = out ]; then
        sed -i -E "/${line}/s/;/ down;/" "$NGINX_CONF"
    fi
    nginx -t -q
    nginx -s reload
    sleep "$SETTLE"
}

for port in $PORTS; do
    grep -Eq "^ *server 127\.0\.0\.1:${port}[ ;]" "$NGINX_CONF" || { echo "no upstream server 127.0.0.1:${port} in $NGINX_CONF" >&2; exit 2; }
done

for port in $PORTS; do
    echo "replica ${port}: out of rotation"
    rotate "$port" out
    systemctl restart "agentchat@${port}"  # SIGTERM, drain, start
    for _ in $(seq 60); do
        curl -fsS "http://127.0.0.1:${port}/healthz" >/dev/null 2>&1 && break
        sleep 1
    done
    curl -fsS "http://127.0.0.1:${port}/healthz" >/dev/null || { echo "replica ${port} is not healthy; left out of rotation" >&2; exit 1; }
    rotate "$port" in
    echo "replica ${port}: back"
done
