//! Creates a VM, starts it and creates its owner in one transaction: all
//! three happen at one revision, or none does, and a failure names the
//! operation at fault.
//!
//! ```sh
//! ARBITER_TOKEN=... cargo run -p arbiter-client --example transaction -- acme web-9 ann@example.com
//! ```

use arbiter_client::v1::{
    CreateUserRequest, CreateVirtualMachineRequest, StartVirtualMachineRequest, User, VirtualMachine,
    operation::Operation,
};
use arbiter_client::{Client, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let server = std::env::var("ARBITER_SERVER").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let token = std::env::var("ARBITER_TOKEN").ok();
    let mut args = std::env::args().skip(1);
    let tenant = args.next().unwrap_or_else(|| "acme".into());
    let vm_id = args.next().unwrap_or_else(|| "web-9".into());
    let email = args.next().unwrap_or_else(|| "ann@example.com".into());
    let parent = format!("tenants/{tenant}");
    let client = Client::connect(&server, token.as_deref()).await?;
    let operations = vec![
        Operation::CreateVirtualMachine(CreateVirtualMachineRequest {
            parent: parent.clone(),
            vm_id: vm_id.clone(),
            vm: Some(VirtualMachine {
                region: "us-east1".into(),
                machine_type: "e2-small".into(),
                image: "debian-12".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        Operation::StartVirtualMachine(StartVirtualMachineRequest {
            name: format!("{parent}/vms/{vm_id}"),
            ..Default::default()
        }),
        Operation::CreateUser(CreateUserRequest {
            parent: parent.clone(),
            user_id: format!("{vm_id}-owner"),
            user: Some(User {
                email,
                ..Default::default()
            }),
            ..Default::default()
        }),
    ];
    match client.commit(&parent, operations).await {
        Ok(done) => println!("committed at revision {}", done.revision),
        Err(e) => {
            let at = e.info().and_then(|i| i.operation_index);
            eprintln!("operation {at:?} failed, nothing was written: {e}");
            std::process::exit(e.class().exit_code());
        }
    }
    Ok(())
}
