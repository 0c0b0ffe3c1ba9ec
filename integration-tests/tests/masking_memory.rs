//! A large masked result streams through the gateway without being buffered whole, custom
//! (batched) masks included. In a test binary of its own so that the memory measured belongs
//! to this scenario alone.

use futures_util::StreamExt;
use sluice_integration_tests::{
    DATABASE, GatewayOptions, PluginSpec, TestGateway, postgres, resident_bytes,
};

#[tokio::test]
async fn hundred_thousand_masked_rows_stream_with_bounded_gateway_memory() {
    let admin = postgres().server.superuser_client(DATABASE).await.unwrap();
    admin
        .batch_execute(
            "CREATE TABLE people AS SELECT g AS id, 'p' || g || '@example.com' AS email,
                 repeat(md5(g::text), 32) AS payload FROM generate_series(1, 100000) g;
             GRANT SELECT ON people TO PUBLIC;",
        )
        .await
        .unwrap();
    let rules = "[config]\nrules = \"people.email=hash, people.payload=partial(2,2)\"\n";
    let gw = TestGateway::start_with(GatewayOptions {
        plugins: vec![
            PluginSpec::with("mask-pii-columns", "mask-pii-columns", rules),
            PluginSpec::stock("pii-scan"),
        ],
        ..GatewayOptions::default()
    })
    .await;
    let client = gw.connect("agent", &gw.token("agent")).await.unwrap();
    // Warm up allocator, TLS buffers, plugin instances and the catalog.
    client
        .simple_query("SELECT email, payload FROM people WHERE id <= 1000")
        .await
        .unwrap();
    let baseline = resident_bytes();

    let rows = client
        .query_raw(
            "SELECT id, email, payload, 'call 555-867-5309 #' || id FROM people ORDER BY id",
            std::iter::empty::<i32>(),
        )
        .await
        .unwrap();
    futures_util::pin_mut!(rows);
    let (mut count, mut bytes, mut peak) = (0u64, 0u64, baseline);
    while let Some(row) = rows.next().await {
        let row = row.unwrap();
        let id: i32 = row.get(0);
        let email: &str = row.get(1);
        let payload: &str = row.get(2);
        let note: &str = row.get(3);
        assert!(email.starts_with("h:"), "{email}");
        assert!(
            payload.starts_with(&payload[..2])
                && payload[2..payload.len() - 2].bytes().all(|b| b == b'*')
        );
        assert_eq!(note, format!("call [phone] #{id}"), "scanned in batches");
        bytes += payload.len() as u64;
        count += 1;
        if count.is_multiple_of(5000) {
            peak = peak.max(resident_bytes());
        }
    }
    assert_eq!(count, 100_000);
    assert!(bytes >= 100_000 * 1024);
    let growth = peak.saturating_sub(baseline);
    assert!(
        growth < 32 * 1024 * 1024,
        "resident memory grew by {} MiB while masking",
        growth / (1024 * 1024)
    );
}
