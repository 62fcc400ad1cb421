//! Managing policies: the module upload around the generic create and
//! update of the `Policy` kind. A module is checked by the policy runtime
//! (it must be a component of the policy world) and stored once under its
//! SHA-256; the policy keeps only the digest, so a later update can go back
//! to an earlier module by digest alone.

use std::sync::Arc;

use arbiter_api::v1::Policy;
use arbiter_store::Store;
use sha2::{Digest, Sha256};

use crate::auth::{Access, Caller};
use crate::engine::Engine;
use crate::error::{Error, invalid};
use crate::kinds::POLICY;
use crate::names;
use crate::requests::{CreateRequest, UpdateRequest};

/// The hex SHA-256 of a module.
pub fn module_digest(module: &[u8]) -> String {
    hex::encode(Sha256::digest(module))
}

impl<S: Store> Engine<S> {
    /// Creates a policy from a request that carries its module (or the
    /// digest of a module uploaded before).
    pub async fn create_policy(
        &self,
        caller: &Caller,
        mut req: CreateRequest<Policy>,
    ) -> Result<Policy, Error> {
        let tenant = names::parse_parent("parent", &req.parent)?;
        caller.authorize(&tenant, Access::Admin)?;
        let mut violations = Vec::new();
        self.policies.config.check(&req.resource, &mut violations);
        invalid(violations)?;
        self.attach_module(&mut req.resource, req.validate_only).await?;
        self.create(caller, req).await
    }

    /// Updates a policy; a new module, or the digest of an earlier one,
    /// makes a new revision that judges the next request.
    pub async fn update_policy(
        &self,
        caller: &Caller,
        mut req: UpdateRequest<Policy>,
    ) -> Result<Policy, Error> {
        let name = names::parse_name("policy.name", &POLICY, &req.resource.name)?;
        caller.authorize(&name.tenant, Access::Admin)?;
        let mut violations = Vec::new();
        self.policies.config.check(&req.resource, &mut violations);
        invalid(violations)?;
        let mask = &mut req.update_mask;
        for path in mask.iter_mut().filter(|p| *p == "module") {
            "module_sha256".clone_into(path);
        }
        let module_masked = mask.is_empty() || mask.iter().any(|p| p == "module_sha256" || p == "*");
        if module_masked {
            self.attach_module(&mut req.resource, req.validate_only).await?;
        } else {
            req.resource.module.clear();
        }
        self.update(caller, req).await
    }

    /// Replaces the request's module bytes with their digest, after the
    /// runtime accepted them and (unless only validating) the store kept
    /// them. A digest alone must name a module this server has.
    async fn attach_module(&self, policy: &mut Policy, validate_only: bool) -> Result<(), Error> {
        let module = std::mem::take(&mut policy.module);
        if module.is_empty() {
            if policy.module_sha256.is_empty() {
                return Ok(());
            }
            let digest = policy.module_sha256.clone();
            let stored = self
                .store()
                .get_blob(digest.as_bytes())
                .await
                .map_err(|e| Error::storage("reading a policy module", e))?
                .ok_or_else(|| {
                    Error::field(
                        "policy.module_sha256",
                        format!("no module with digest {digest} was uploaded here; send the module itself in policy.module"),
                    )
                })?;
            policy.module_size_bytes = stored.len() as u64;
            return self.load_module(digest, stored.into()).await;
        }
        let max = self.policies.config.max_module_bytes;
        if module.len() > max {
            return Err(Error::field(
                "policy.module",
                format!(
                    "is {} bytes; this server accepts modules of at most {max} bytes",
                    module.len()
                ),
            ));
        }
        let digest = module_digest(&module);
        if !policy.module_sha256.is_empty() && policy.module_sha256 != digest {
            return Err(Error::field(
                "policy.module_sha256",
                format!(
                    "is {} but the module's SHA-256 is {digest}; send one of them, or matching ones",
                    policy.module_sha256
                ),
            ));
        }
        let module: Arc<[u8]> = module.into();
        self.load_module(digest.clone(), Arc::clone(&module)).await?;
        if !validate_only {
            self.store()
                .put_blob(digest.as_bytes(), module.to_vec())
                .await
                .map_err(|e| Error::storage("storing the policy module", e))?;
        }
        policy.module_size_bytes = module.len() as u64;
        policy.module_sha256 = digest;
        Ok(())
    }

    async fn load_module(&self, digest: String, module: Arc<[u8]>) -> Result<(), Error> {
        self.policies
            .runtime()?
            .load(digest, module)
            .await
            .map_err(|e| match e {
                crate::policy::LoadError::Invalid(why) => Error::field("policy.module", why),
                crate::policy::LoadError::Busy(why) => Error::RateLimited {
                    what: why,
                    limit: "module compiles at once".into(),
                    retry_after: std::time::Duration::from_secs(5),
                },
            })
    }
}
