// An MCP client for the tests, built on the official TypeScript SDK: connects to Sluice's MCP
// server (argv[2], the /mcp URL) with a bearer token (argv[3]), then takes one command per
// line on stdin and writes one JSON line per answer (and per progress notification) on stdout:
//   {"list": true}                               -> {"tools": [...]}
//   {"call": "query", "args": {...}, "id": "a"}  -> {"id": "a", "result": {...}} or {"id", "error"}
//   {"cancel": "a"}                              -> cancels call "a" (notifications/cancelled)
//   {"close": true}                              -> ends the MCP session (DELETE) and exits
// Progress notifications arrive as {"id": "a", "progress": "..."} while a call waits.
import { createInterface } from "node:readline";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, token] = process.argv.slice(2);
const say = (value) => process.stdout.write(JSON.stringify(value) + "\n");

const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${token}` } },
});
const client = new Client({ name: "sluice-tests", version: "1.0.0" });
try {
  await client.connect(transport);
} catch (error) {
  say({ connect_error: String(error), code: error.code ?? null });
  process.exit(0);
}
say({
  connected: true,
  protocol_version: transport.protocolVersion ?? null,
  session: transport.sessionId ?? null,
});

const running = [];
const aborts = new Map();
for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const command = JSON.parse(line);
  if (command.list) {
    const { tools } = await client.listTools();
    say({ tools });
  } else if (command.call) {
    const id = command.id ?? command.call;
    const abort = new AbortController();
    aborts.set(id, abort);
    running.push(
      client
        .callTool({ name: command.call, arguments: command.args ?? {} }, undefined, {
          onprogress: (progress) => say({ id, progress: progress.message ?? null }),
          resetTimeoutOnProgress: true,
          timeout: 120000,
          signal: abort.signal,
        })
        .then((result) => say({ id, result }))
        .catch((error) => say({ id, error: String(error), code: error.code ?? null })),
    );
  } else if (command.cancel) {
    aborts.get(command.cancel)?.abort("cancelled by the test");
  } else if (command.close) {
    await Promise.all(running);
    await transport.terminateSession();
    await client.close();
    say({ closed: true });
    process.exit(0);
  }
}
await Promise.all(running);
await client.close();
