//! Hot reload under load: plugins swapped while pgbench runs, no transaction fails, and the new
//! behaviour shows within a second, picked up by the directory watcher alone.

use std::time::{Duration, Instant};

use sluice_integration_tests::{GatewayOptions, PluginSpec, TestGateway};

fn probe_policy(deny: bool) -> PluginSpec {
    let mode = if deny { "deny" } else { "allow" };
    PluginSpec::with(
        "probe",
        "test-faults",
        &format!("[config]\nmode = \"{mode}\"\nmatch = \"sluice_probe\"\n"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_swapped_ten_times_under_pgbench_fail_nothing_and_apply_within_a_second() {
    let gw = TestGateway::start_with(GatewayOptions {
        plugins: vec![PluginSpec::stock("no-ddl"), probe_policy(false)],
        ..Default::default()
    })
    .await;
    let token = gw.token("bench");
    let script = sluice_integration_tests::pgbench_script(
        "\\set id random(1, 100)\nSELECT name FROM items WHERE id = :id;\n",
    );
    let pgbench = sluice_integration_tests::pgbench(
        gw.port(),
        "bench",
        &token,
        &["-n", "-c", "4", "-j", "2", "-T", "8", "-M", "extended"],
        script.path(),
    )
    .output();
    let swaps = async {
        let client = gw.connect("prober", &gw.token("prober")).await.unwrap();
        let mut worst = Duration::ZERO;
        for i in 0..10 {
            let deny = i % 2 == 0;
            probe_policy(deny).install(&gw.plugin_dir());
            let changed = Instant::now();
            loop {
                let refused = client.simple_query("SELECT 'sluice_probe'").await.is_err();
                if refused == deny {
                    break;
                }
                assert!(
                    changed.elapsed() < Duration::from_secs(1),
                    "swap {i} not visible after {:?}",
                    changed.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            worst = worst.max(changed.elapsed());
        }
        worst
    };
    let (out, worst) = tokio::join!(pgbench, swaps);
    let out = out.unwrap();
    sluice_integration_tests::assert_pgbench_clean(&out);
    eprintln!("slowest swap became visible after {worst:?}");
}
