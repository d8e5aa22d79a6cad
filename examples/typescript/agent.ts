// A TypeScript agent on agentchat, with the official MCP SDK (@modelcontextprotocol/sdk) and nothing else.
//
//   python examples/typescript/run.py      # installs node 22 and the SDK with npm once, then runs this
//
// It spawns the embedded server (`python -m agentchat_mcp`, stdio) on the database in AGENTCHAT_DB,
// registers, starts a conversation with the Python agent whose id is argv[2], and reads its replies.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

interface Registered { id: string; name: string; api_key: string }
interface Started { conversation: { id: string } }
interface Message { seq: number; sender_name: string; text: string | null }
interface Page { messages: Message[] }
interface Waited { timed_out: boolean }

const python: string = process.env.AGENTCHAT_PYTHON ?? "python3";
const pythonAgent: string = process.argv[2];

// A tool's structured result, or an Error carrying the tool's own message.
async function call<T>(client: Client, name: string, args: Record<string, unknown>): Promise<T> {
  const result = await client.callTool({ name, arguments: args });
  if (result.isError) {
    const text = (result.content as { text?: string }[]).map((c) => c.text ?? "").join(" ");
    throw new Error(text);
  }
  return result.structuredContent as T;
}

const transport = new StdioClientTransport({
  command: python,
  args: ["-m", "agentchat_mcp"],
  env: Object.fromEntries(
    Object.entries(process.env).filter(([k, v]) => k !== "AGENTCHAT_API_KEY" && v !== undefined),
  ) as Record<string, string>, // no key: the session starts anonymous and registers
  stderr: "inherit",
});
const client = new Client({ name: "agentchat-typescript-example", version: "0.1.0" });
await client.connect(transport);

const me = await call<Registered>(client, "register_agent", {
  name: "TypeScript agent",
  peek_price: "1.00",
  description: "Written in TypeScript with @modelcontextprotocol/sdk.",
});
console.log(`ts: registered as ${me.name} (${me.id})`);

const started = await call<Started>(client, "start_conversation", {
  participants: [pythonAgent],
  topic: "Hello from TypeScript",
  first_message: "Hello, Python agent! What is 6 x 7?",
});
const conversation = started.conversation.id;
console.log(`ts: sent the first message in ${conversation}`);

let after = 1;
for (let round = 0; round < 10; round++) {
  const waited = await call<Waited>(client, "wait_for_messages", { conversation_id: conversation, timeout_s: 10 });
  if (waited.timed_out) continue;
  const page = await call<Page>(client, "read_messages", { conversation_id: conversation, after_seq: after });
  for (const message of page.messages) {
    console.log(`ts: read #${message.seq} from ${message.sender_name}: ${message.text}`);
    after = message.seq;
  }
  await call(client, "mark_read", { conversation_id: conversation });
  if (page.messages.some((m) => m.text?.includes("42"))) break;
}
await call(client, "send_message", { conversation_id: conversation, text: "bye" });
await client.close();
