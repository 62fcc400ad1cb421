//! Adds one to the `count` label of a VM, however many clients do the same
//! at once: `update_with` re-reads and re-applies on every conflict.
//!
//! ```sh
//! ARBITER_TOKEN=... cargo run -p arbiter-client --example update_with -- tenants/acme/vms/web-1
//! ```

use arbiter_client::{Client, Error, v1::VirtualMachine};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let server = std::env::var("ARBITER_SERVER").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let token = std::env::var("ARBITER_TOKEN").ok();
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tenants/acme/vms/web-1".into());
    let client = Client::connect(&server, token.as_deref()).await?;
    let vm: VirtualMachine = client
        .update_with(&name, &["labels.count"], |vm: &mut VirtualMachine| {
            let count: u64 = vm.labels.get("count").and_then(|c| c.parse().ok()).unwrap_or(0);
            vm.labels.insert("count".into(), (count + 1).to_string());
        })
        .await?;
    println!("{} count={} etag={}", vm.name, vm.labels["count"], vm.etag);
    Ok(())
}
