//! The check that unique indexes and objects agree (`arbiter check`, and
//! the crash tests after every restart).

use std::collections::BTreeMap;

use arbiter_api::v1::{Prompt, User, VirtualMachine};
use arbiter_store::{Scan, Store};

use crate::engine::{Engine, decode};
use crate::error::Error;
use crate::kind::Resource;
use crate::names;
use crate::stage::unique_values;

impl<S: Store> Engine<S> {
    /// Checks that the unique indexes and the objects agree: every unique
    /// value of every object is indexed to it, and every index entry points
    /// at an object holding that value. Returns the disagreements.
    pub async fn check_consistency(&self) -> Result<Vec<String>, Error> {
        let mut expected = BTreeMap::new();
        let mut problems = Vec::new();
        self.expected_unique::<VirtualMachine>(&mut expected, &mut problems)
            .await?;
        self.expected_unique::<User>(&mut expected, &mut problems).await?;
        self.expected_unique::<Prompt>(&mut expected, &mut problems)
            .await?;
        let mut indexed = BTreeMap::new();
        self.store
            .scan_unique(b"", &mut |key, owner| {
                indexed.insert(key.to_vec(), owner.to_vec());
                Scan::Continue
            })
            .await
            .map_err(|e| Error::storage("scanning unique indexes", e))?;
        for (key, owner) in &expected {
            if indexed.get(key) != Some(owner) {
                problems.push(format!(
                    "{} holds {} but the index says {:?}",
                    names::name_of_key(owner),
                    String::from_utf8_lossy(key),
                    indexed.get(key).map(|o| names::name_of_key(o))
                ));
            }
        }
        for (key, owner) in &indexed {
            if !expected.contains_key(key) {
                problems.push(format!(
                    "index entry {} points at {}, which does not hold it",
                    String::from_utf8_lossy(key),
                    names::name_of_key(owner)
                ));
            }
        }
        Ok(problems)
    }

    async fn expected_unique<R: Resource>(
        &self,
        expected: &mut BTreeMap<Vec<u8>, Vec<u8>>,
        problems: &mut Vec<String>,
    ) -> Result<(), Error> {
        let collection = format!("/{}/", R::KIND.collection);
        self.store
            .scan(b"", None, &mut |key, stored| {
                let text = String::from_utf8_lossy(key);
                let Some((tenant, _)) = text.split_once(&collection) else {
                    return Scan::Continue;
                };
                match decode::<R>(key, &stored) {
                    Ok(r) => {
                        for u in unique_values(tenant, &r) {
                            if let Some(other) = expected.insert(u.key, key.to_vec()) {
                                problems.push(format!(
                                    "{} and {} hold the same {}",
                                    names::name_of_key(&other),
                                    text,
                                    u.field
                                ));
                            }
                        }
                    }
                    Err(e) => problems.push(format!("{text}: {e}")),
                }
                Scan::Continue
            })
            .await
            .map(|_| ())
            .map_err(|e| Error::storage("scanning objects", e))
    }
}
