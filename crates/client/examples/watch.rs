//! Prints a tenant's changes as they happen, resuming by itself when the
//! connection or the server goes away.
//!
//! ```sh
//! ARBITER_TOKEN=... cargo run -p arbiter-client --example watch -- tenants/acme
//! ```

use arbiter_client::{Client, Error, v1::WatchChangesRequest, v1::change::Type};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let server = std::env::var("ARBITER_SERVER").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let token = std::env::var("ARBITER_TOKEN").ok();
    let parent = std::env::args().nth(1).unwrap_or_else(|| "tenants/acme".into());
    let client = Client::connect(&server, token.as_deref()).await?;
    let mut watch = client.watch(WatchChangesRequest {
        parent,
        send_initial: true,
        ..Default::default()
    });
    while let Some(change) = watch.next().await {
        match change {
            Ok(c) if c.r#type == Type::Bookmark as i32 => {
                println!("-- up to date at revision {}", c.revision)
            }
            Ok(c) => println!(
                "{:>8} {:?} {} by {} ({})",
                c.revision,
                Type::try_from(c.r#type).unwrap_or(Type::Unspecified),
                c.name,
                c.principal,
                c.changed_fields.join(", ")
            ),
            // The resume point was compacted: what follows is a fresh listing.
            Err(Error::RevisionCompacted { .. }) => println!("-- listing afresh"),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
