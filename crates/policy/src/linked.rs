//! Linked components of either world version whose `evaluate` export was
//! type-checked once, when the component was loaded.
//!
//! The generated `PolicyPre::instantiate_async` type-checks every export of
//! the world again at each instantiation (the record types of `request`
//! field by field): a tenth of what instantiating vm-guard costs, on every
//! evaluation. Here an evaluation looks `evaluate` up by the index found at
//! load and calls it without checking its type again.
//!
//! A component that imports nothing asynchronous (no WASI, no `lookup`;
//! only `log` and interfaces of types) is also instantiated and called
//! *inline*: on the caller's thread, without the fiber that an async call
//! takes from the pool, switches to and gives back: 5–10% of what the
//! smallest evaluation costs.

// The one unchecked call below is why this module may use unsafe code.
#![allow(unsafe_code)]

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, ComponentExportIndex, Instance, InstancePre, TypedFunc};
use wasmtime::{Engine, Store};

use crate::bindings::{v1, v2};

macro_rules! linked {
    ($(#[$doc:meta])* $name:ident, $version:ident) => {
        $(#[$doc])*
        pub struct $name<T: 'static> {
            pre: InstancePre<T>,
            evaluate: ComponentExportIndex,
            inline: bool,
        }

        impl<T: 'static> Clone for $name<T> {
            fn clone(&self) -> Self {
                Self {
                    pre: self.pre.clone(),
                    evaluate: self.evaluate,
                    inline: self.inline,
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
                let inline = imports_nothing_async(pre.engine(), pre.component());
                Ok(Self { pre, evaluate, inline })
            }

            /// Whether this component can be instantiated and called
            /// inline, without a fiber.
            pub fn inline(&self) -> bool {
                self.inline
            }

            /// Instantiates the component in `store`, checking nothing
            /// again: what every evaluation does first.
            pub async fn instantiate(&self, store: &mut Store<T>) -> wasmtime::Result<Instance> {
                self.pre.instantiate_async(store).await
            }

            /// Instantiates the component in `store` and calls `evaluate`
            /// on a fiber.
            pub async fn evaluate(
                &self,
                store: &mut Store<T>,
                request: &$version::arbiter::policy::types::Request,
            ) -> wasmtime::Result<$version::arbiter::policy::types::Decision> {
                let instance = self.instantiate(store).await?;
                let (decision,) = self
                    .evaluate_func(store, &instance)?
                    .call_async(&mut *store, (request,))
                    .await?;
                Ok(decision)
            }

            /// Instantiates the component inline, checking nothing again.
            /// Only for a component that [`inline`](Self::inline) allows.
            pub fn instantiate_inline(&self, store: &mut Store<T>) -> wasmtime::Result<Instance> {
                self.pre.instantiate(store)
            }

            /// Calls `evaluate` of `instance`, an instance of this
            /// component in `store`, inline. Only for a component that
            /// [`inline`](Self::inline) allows; the store's epoch callback
            /// must interrupt, not yield.
            pub fn call_inline(
                &self,
                store: &mut Store<T>,
                instance: &Instance,
                request: &$version::arbiter::policy::types::Request,
            ) -> wasmtime::Result<$version::arbiter::policy::types::Decision> {
                let (decision,) = self
                    .evaluate_func(store, instance)?
                    .call(&mut *store, (request,))?;
                Ok(decision)
            }

            /// The instance's `evaluate`, typed without checking again.
            fn evaluate_func(
                &self,
                store: &mut Store<T>,
                instance: &Instance,
            ) -> wasmtime::Result<
                TypedFunc<
                    (&$version::arbiter::policy::types::Request,),
                    ($version::arbiter::policy::types::Decision,),
                >,
            > {
                let func = instance
                    .get_func(&mut *store, self.evaluate)
                    .ok_or_else(|| wasmtime::format_err!("no export `evaluate` found"))?;
                // SAFETY: `new` took this index from this component after
                // `PolicyPre::new` checked that its `evaluate` export has
                // the world's type, `func(req: request) -> decision`, which
                // is what these generated types lower and lift.
                Ok(unsafe { TypedFunc::new_unchecked(func) })
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

/// Whether `component` imports only what the host links synchronously:
/// the `log` function and interfaces that hold types alone. WASI's
/// functions and `lookup` are async in the host's linker, so a component
/// that imports any of them must be called on a fiber.
fn imports_nothing_async(engine: &Engine, component: &Component) -> bool {
    component
        .component_type()
        .imports(engine)
        .all(|(name, item)| match item.ty {
            ComponentItem::ComponentFunc(_) => name == "log",
            ComponentItem::ComponentInstance(instance) => instance
                .exports(engine)
                .all(|(_, item)| matches!(item.ty, ComponentItem::Type(_))),
            ComponentItem::Type(_) => true,
            _ => false,
        })
}
