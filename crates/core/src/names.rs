//! Resource names (AIP-122): `tenants/{tenant}` and
//! `tenants/{tenant}/{collection}/{id}`, and the store keys derived from
//! them.

use crate::error::Error;
use crate::kind::Kind;
use crate::validate::check_id;

/// A parsed resource name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    /// The tenant id.
    pub tenant: String,
    /// The resource id.
    pub id: String,
}

impl Name {
    /// The full name, `tenants/{tenant}/{collection}/{id}`.
    pub fn full(&self, kind: &Kind) -> String {
        format!("tenants/{}/{}/{}", self.tenant, kind.collection, self.id)
    }

    /// The store key of the object.
    pub fn key(&self, kind: &Kind) -> Vec<u8> {
        format!("{}/{}/{}", self.tenant, kind.collection, self.id).into_bytes()
    }
}

/// Parses `tenants/{tenant}`; `field` names the request field for errors.
pub fn parse_parent(field: &str, parent: &str) -> Result<String, Error> {
    let tenant = parent.strip_prefix("tenants/").ok_or_else(|| {
        Error::field(
            field,
            format!("{parent:?} is not a tenant name; expected \"tenants/{{tenant}}\""),
        )
    })?;
    check_id(tenant).map_err(|e| Error::field(field, format!("bad tenant id: {e}")))?;
    Ok(tenant.to_string())
}

/// Parses `tenants/{tenant}/{collection}/{id}` for `kind`.
pub fn parse_name(field: &str, kind: &Kind, name: &str) -> Result<Name, Error> {
    let expected = || {
        Error::field(
            field,
            format!(
                "{name:?} is not a {} name; expected \"tenants/{{tenant}}/{}/{{{}}}\"",
                kind.noun, kind.collection, kind.singular
            ),
        )
    };
    let mut parts = name.split('/');
    let (Some("tenants"), Some(tenant), Some(collection), Some(id), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(expected());
    };
    if collection != kind.collection {
        return Err(expected());
    }
    check_id(tenant).map_err(|e| Error::field(field, format!("bad tenant id: {e}")))?;
    check_id(id).map_err(|e| Error::field(field, format!("bad {} id: {e}", kind.singular)))?;
    Ok(Name {
        tenant: tenant.to_string(),
        id: id.to_string(),
    })
}

/// The store key prefix of a tenant's collection.
pub fn collection_prefix(tenant: &str, kind: &Kind) -> Vec<u8> {
    format!("{tenant}/{}/", kind.collection).into_bytes()
}

/// The store key of a unique field value.
pub fn unique_key(tenant: &str, kind: &Kind, field: &str, normalized: &str) -> Vec<u8> {
    format!("{tenant}/{}/{field}/{normalized}", kind.collection).into_bytes()
}

/// The tenant a resource or parent name (`tenants/{tenant}/...`) names;
/// "" for a name that names none. Not validated.
pub fn tenant_of(name: &str) -> &str {
    name.strip_prefix("tenants/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
}

/// The collection segment of a resource name
/// (`tenants/{tenant}/{collection}/{id}`); "" when it has none. Not
/// validated.
pub fn collection_of(name: &str) -> &str {
    name.split('/').nth(2).unwrap_or_default()
}

/// The full name of the object stored under `key`.
pub fn name_of_key(key: &[u8]) -> String {
    format!("tenants/{}", String::from_utf8_lossy(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::VM;

    #[test]
    fn names_round_trip() {
        let name = parse_name("name", &VM, "tenants/acme/vms/web-1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(name.full(&VM), "tenants/acme/vms/web-1");
        assert_eq!(name_of_key(&name.key(&VM)), "tenants/acme/vms/web-1");
    }

    #[test]
    fn bad_names_name_the_field() {
        for bad in [
            "",
            "tenants/acme",
            "tenants/acme/users/x",
            "tenants/Acme/vms/x",
            "tenants/acme/vms/x/y",
            "tenants/acme/vms/",
        ] {
            match parse_name("vm.name", &VM, bad) {
                Err(Error::InvalidField { violations }) => assert_eq!(violations[0].field, "vm.name"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert!(parse_parent("parent", "tenants/acme").is_ok());
        assert!(parse_parent("parent", "acme").is_err());
    }
}
