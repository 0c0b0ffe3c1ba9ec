// The MCP side of bench/mcp.sh: one client of the official TypeScript SDK calls `query` with the
// same statement back to back for a while, and prints how many calls it made and their latency.
//   node bench_calls.mjs URL TOKEN SECONDS SQL
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, token, seconds, sql] = process.argv.slice(2);
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${token}` } },
});
const client = new Client({ name: "sluice-bench", version: "1.0.0" });
await client.connect(transport);
// One call first: the database session is opened then, as psql's is before its first statement.
await client.callTool({ name: "query", arguments: { sql } });

const latencies = [];
const end = performance.now() + Number(seconds) * 1000;
const started = performance.now();
while (performance.now() < end) {
  const t = performance.now();
  const result = await client.callTool({ name: "query", arguments: { sql } });
  if (result.isError) throw new Error(JSON.stringify(result));
  latencies.push(performance.now() - t);
}
const elapsed = (performance.now() - started) / 1000;
latencies.sort((a, b) => a - b);
const at = (q) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))];
console.log(JSON.stringify({
  calls: latencies.length,
  per_second: latencies.length / elapsed,
  p50_ms: at(0.5),
  p99_ms: at(0.99),
}));
await transport.terminateSession();
await client.close();
