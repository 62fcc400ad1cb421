//! Opaque, stable page tokens (AIP-158). A token names the last resource
//! returned, not an offset, so pages stay correct while resources come and
//! go; it is bound to the collection and filter it was issued for.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::error::Error;

/// Default page size.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Largest page size; larger requests are capped.
pub const MAX_PAGE_SIZE: usize = 1000;

fn binding(parent: &str, collection: &str, filter: &str) -> String {
    let digest = Sha256::digest(format!("{parent}\n{collection}\n{filter}"));
    hex::encode(&digest[..8])
}

/// Encodes the token for the page after `last_id`.
pub fn encode(parent: &str, collection: &str, filter: &str, last_id: &str) -> String {
    let raw = format!("1|{}|{last_id}", binding(parent, collection, filter));
    URL_SAFE_NO_PAD.encode(raw)
}

/// Decodes a token into the id to resume after.
pub fn decode(token: &str, parent: &str, collection: &str, filter: &str) -> Result<String, Error> {
    let invalid = || {
        Error::field(
            "page_token",
            "not a page token of this list; pass next_page_token from the previous page unchanged, with the same parent and filter",
        )
    };
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let raw = String::from_utf8(raw).map_err(|_| invalid())?;
    let mut parts = raw.splitn(3, '|');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("1"), Some(bound), Some(last)) if bound == binding(parent, collection, filter) => {
            Ok(last.to_string())
        }
        _ => Err(invalid()),
    }
}

/// The page size to use for a requested `page_size`.
pub fn size(requested: i32) -> Result<usize, Error> {
    match usize::try_from(requested) {
        Err(_) => Err(Error::field("page_size", "must not be negative")),
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(n) => Ok(n.min(MAX_PAGE_SIZE)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_bind_to_their_list() {
        let token = encode("tenants/a", "vms", "", "web-1");
        assert_eq!(
            decode(&token, "tenants/a", "vms", "").ok().as_deref(),
            Some("web-1")
        );
        assert!(decode(&token, "tenants/b", "vms", "").is_err());
        assert!(decode(&token, "tenants/a", "vms", "state = RUNNING").is_err());
        assert!(decode("garbage!", "tenants/a", "vms", "").is_err());
    }

    #[test]
    fn sizes_default_and_cap() {
        assert_eq!(size(0).ok(), Some(DEFAULT_PAGE_SIZE));
        assert_eq!(size(5000).ok(), Some(MAX_PAGE_SIZE));
        assert!(size(-1).is_err());
    }
}
