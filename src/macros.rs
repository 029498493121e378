//! Small macros shared by the middleware modules.

/// Gives a middleware service tower-http's three accessors of its inner
/// service: `get_ref`, `get_mut` and `into_inner`.
///
/// `inner_accessors!([S, R] Tenant<S, R>, inner: S);` — the generics of
/// the impl, the service type, and the field that holds the inner
/// service with its type.
#[allow(unused_macros)] // unused when no middleware feature is on
macro_rules! inner_accessors {
    ([$($gen:tt)*] $ty:ty, $field:ident: $inner:ty) => {
        impl<$($gen)*> $ty {
            /// A reference to the inner service.
            pub fn get_ref(&self) -> &$inner {
                &self.$field
            }

            /// A mutable reference to the inner service.
            pub fn get_mut(&mut self) -> &mut $inner {
                &mut self.$field
            }

            /// Consumes `self`, returning the inner service.
            pub fn into_inner(self) -> $inner {
                self.$field
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use inner_accessors;
