//! The resources a client reads and updates generically: their name and
//! etag, and their service's get and update methods.

use std::future::Future;

use arbiter_api::v1::{
    GetPolicyRequest, GetPromptRequest, GetUserRequest, GetVirtualMachineRequest, Policy, Prompt,
    UpdatePolicyRequest, UpdatePromptRequest, UpdateUserRequest, UpdateVirtualMachineRequest, User,
    VirtualMachine,
};
use prost_types::FieldMask;

use crate::{Client, Error};

/// A resource with a get and an update method.
pub trait Resource: prost::Message + Default + Clone + Send + Sync + Sized + 'static {
    /// Its full protobuf type name, e.g. `arbiter.v1.VirtualMachine`.
    const TYPE_NAME: &'static str;

    /// Its full name.
    fn name(&self) -> &str;
    /// Its etag.
    fn etag(&self) -> &str;
    /// Reads it.
    fn get(client: &Client, name: &str) -> impl Future<Output = Result<Self, Error>> + Send;
    /// Updates the `mask` fields of `self` (whose etag makes it
    /// conditional).
    fn update(self, client: &Client, mask: &[&str]) -> impl Future<Output = Result<Self, Error>> + Send;
}

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(ToString::to_string).collect(),
    })
}

macro_rules! resource {
    ($ty:ty = $type_name:literal, $service:ident, $get:ident($get_req:ident), $update:ident($update_req:ident { $field:ident })) => {
        impl Resource for $ty {
            const TYPE_NAME: &'static str = $type_name;

            fn name(&self) -> &str {
                &self.name
            }

            fn etag(&self) -> &str {
                &self.etag
            }

            async fn get(client: &Client, name: &str) -> Result<Self, Error> {
                let request = $get_req {
                    name: name.to_string(),
                };
                Ok(client.$service().$get(request).await?.into_inner())
            }

            async fn update(self, client: &Client, paths: &[&str]) -> Result<Self, Error> {
                let request = $update_req {
                    $field: Some(self),
                    update_mask: mask(paths),
                    ..Default::default()
                };
                Ok(client.$service().$update(request).await?.into_inner())
            }
        }
    };
}

resource!(
    VirtualMachine = "arbiter.v1.VirtualMachine",
    vms,
    get_virtual_machine(GetVirtualMachineRequest),
    update_virtual_machine(UpdateVirtualMachineRequest { vm })
);
resource!(
    User = "arbiter.v1.User",
    users,
    get_user(GetUserRequest),
    update_user(UpdateUserRequest { user })
);
resource!(
    Prompt = "arbiter.v1.Prompt",
    prompts,
    get_prompt(GetPromptRequest),
    update_prompt(UpdatePromptRequest { prompt })
);
resource!(
    Policy = "arbiter.v1.Policy",
    policies,
    get_policy(GetPolicyRequest),
    update_policy(UpdatePolicyRequest { policy })
);
