"""An MCP client of the current specification for the tests: the official Python SDK's
`Client` (mcp 2.x), which negotiates 2026-07-28, the version without protocol sessions.

Usage: current_spec_client.py URL TOKEN CALLS, CALLS a JSON list of [tool, arguments].
Prints one JSON object: the negotiated protocol version and each call's result.
"""

import asyncio
import json
import sys

from mcp import Client
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client


async def main(url: str, token: str, calls: list) -> dict:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            results = []
            for tool, arguments in calls:
                result = await client.call_tool(tool, arguments)
                results.append(
                    {
                        "is_error": bool(result.is_error),
                        "structured": result.structured_content,
                        "text": result.content[0].text if result.content else None,
                    }
                )
            return {"protocol_version": client.protocol_version, "results": results}


if __name__ == "__main__":
    url, token, calls = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    print(json.dumps(asyncio.run(main(url, token, calls))))
