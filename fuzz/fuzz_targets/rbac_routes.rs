#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| finmesh_fuzz::rbac_routes(data));
