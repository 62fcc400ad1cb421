//! Who is calling and what they may do: a principal, the tenant its token
//! grants (or every tenant), and a role.

pub use crate::access::{Access, Role};
use crate::error::Error;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The principal, recorded as `created_by`/`updated_by`.
    pub principal: String,
    /// The tenant the token grants; `*` grants every tenant.
    pub tenant: String,
    /// The caller's role.
    pub role: Role,
}

impl Caller {
    /// Checks that the caller may perform `access` in `tenant`.
    pub fn authorize(&self, tenant: &str, access: Access) -> Result<(), Error> {
        if self.tenant != "*" && self.tenant != tenant {
            return Err(Error::TenantForbidden {
                principal: self.principal.clone(),
                tenant: tenant.to_string(),
            });
        }
        let required = access.required();
        if self.role < required {
            return Err(Error::RoleForbidden {
                principal: self.principal.clone(),
                role: self.role.as_str(),
                required: required.as_str(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(tenant: &str, role: Role) -> Caller {
        Caller {
            principal: "p".into(),
            tenant: tenant.into(),
            role,
        }
    }

    #[test]
    fn tenant_and_role_are_both_checked() {
        assert!(
            caller("acme", Role::Editor)
                .authorize("acme", Access::Write)
                .is_ok()
        );
        assert!(caller("*", Role::Viewer).authorize("other", Access::Read).is_ok());
        assert!(matches!(
            caller("acme", Role::Admin).authorize("globex", Access::Read),
            Err(Error::TenantForbidden { .. })
        ));
        assert!(matches!(
            caller("acme", Role::Viewer).authorize("acme", Access::Write),
            Err(Error::RoleForbidden {
                required: "editor",
                ..
            })
        ));
    }
}
