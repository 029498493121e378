#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| finmesh_fuzz::tenant_namespace(data));
