//! Linked components of either world version whose `evaluate` export was
//! type-checked once, when the component was loaded.
//!
//! The generated `PolicyPre::instantiate_async` type-checks every export of
//! the world again at each instantiation (the record types of `request`
//! field by field): a tenth of what instantiating vm-guard costs, on every
//! evaluation. Here an evaluation looks `evaluate` up by the index found at
//! load and calls it without checking its type again.

// The one unchecked call below is why this module may use unsafe code.
#![allow(unsafe_code)]

use wasmtime::Store;
use wasmtime::component::{ComponentExportIndex, Instance, InstancePre, TypedFunc};

use crate::bindings::{v1, v2};

macro_rules! linked {
    ($(#[$doc:meta])* $name:ident, $version:ident) => {
        $(#[$doc])*
        pub struct $name<T: 'static> {
            pre: InstancePre<T>,
            evaluate: ComponentExportIndex,
        }

        impl<T: 'static> Clone for $name<T> {
            fn clone(&self) -> Self {
                Self {
                    pre: self.pre.clone(),
                    evaluate: self.evaluate,
                }
            }
        }

        impl<T: Send + 'static> $name<T> {
            /// Checks the types of the world's exports against the
            /// component and keeps the index of `evaluate`.
            pub fn new(pre: InstancePre<T>) -> wasmtime::Result<Self> {
                // The generated bindings check the types; only the
                // checking is kept of them.
                $version::PolicyPre::new(pre.clone())?;
                let evaluate = pre
                    .component()
                    .get_export_index(None, "evaluate")
                    .ok_or_else(|| wasmtime::format_err!("no export `evaluate` found"))?;
                Ok(Self { pre, evaluate })
            }

            /// Instantiates the component in `store`, checking nothing
            /// again: what every evaluation does first.
            pub async fn instantiate(&self, store: &mut Store<T>) -> wasmtime::Result<Instance> {
                self.pre.instantiate_async(store).await
            }

            /// Instantiates the component in `store` and calls `evaluate`.
            pub async fn evaluate(
                &self,
                store: &mut Store<T>,
                request: &$version::arbiter::policy::types::Request,
            ) -> wasmtime::Result<$version::arbiter::policy::types::Decision> {
                let instance = self.instantiate(store).await?;
                let func = instance
                    .get_func(&mut *store, self.evaluate)
                    .ok_or_else(|| wasmtime::format_err!("no export `evaluate` found"))?;
                // SAFETY: `new` took this index from this component after
                // `PolicyPre::new` checked that its `evaluate` export has
                // the world's type, `func(req: request) -> decision`, which
                // is what these generated types lower and lift.
                let evaluate = unsafe {
                    TypedFunc::<
                        (&$version::arbiter::policy::types::Request,),
                        ($version::arbiter::policy::types::Decision,),
                    >::new_unchecked(func)
                };
                let (decision,) = evaluate.call_async(&mut *store, (request,)).await?;
                Ok(decision)
            }
        }
    };
}

linked!(
    /// A linked component of `arbiter:policy@0.1.0`.
    V1,
    v1
);
linked!(
    /// A linked component of `arbiter:policy@0.2.0`.
    V2,
    v2
);
