//! Large results stream through the gateway without being buffered whole. In a test binary of
//! its own so that the memory measured belongs to this scenario alone.

use futures_util::StreamExt;
use sluice_integration_tests::{TestGateway, resident_bytes};

#[tokio::test]
async fn hundred_thousand_row_result_streams_with_bounded_gateway_memory() {
    let gw = TestGateway::start().await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    // Warm up allocator and TLS buffers so the baseline includes them.
    client
        .simple_query("SELECT repeat('x', 1000)")
        .await
        .unwrap();
    let baseline = resident_bytes();

    // 100,000 rows of ~1 KiB: ~100 MiB through the gateway.
    let rows = client
        .query_raw(
            "SELECT g, repeat(md5(g::text), 32) FROM generate_series(1, 100000) g",
            std::iter::empty::<i32>(),
        )
        .await
        .unwrap();
    futures_util::pin_mut!(rows);
    let mut count = 0u64;
    let mut bytes = 0u64;
    let mut peak = baseline;
    while let Some(row) = rows.next().await {
        let row = row.unwrap();
        bytes += row.get::<_, &str>(1).len() as u64;
        count += 1;
        if count.is_multiple_of(5000) {
            peak = peak.max(resident_bytes());
        }
    }
    assert_eq!(count, 100_000);
    assert!(bytes >= 100_000 * 1024);
    // Gateway and client share this process; buffering the result anywhere would add ~100 MiB.
    let growth = peak.saturating_sub(baseline);
    assert!(
        growth < 32 * 1024 * 1024,
        "resident memory grew by {} MiB while streaming",
        growth / (1024 * 1024)
    );
}
