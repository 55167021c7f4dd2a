//! The default build is statically linked (`.cargo/config.toml`). The test
//! binary is built with the same flags as the release one, so checking it
//! here catches a dependency that drags in a dynamic library; `ci/test.sh`
//! checks the release binary itself with `ldd`.

const BIN: &str = env!("CARGO_BIN_EXE_llorchd");

const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;

fn u16_at(b: &[u8], o: usize) -> usize {
    u16::from_le_bytes(b[o..o + 2].try_into().unwrap()) as usize
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

#[test]
fn the_binary_has_no_interpreter_and_needs_no_shared_library() {
    let b = std::fs::read(BIN).unwrap();
    assert_eq!(&b[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(b[4], 2, "not a 64-bit ELF");
    assert_eq!(b[5], 1, "not little-endian");
    let (phoff, phentsize, phnum) = (
        u64_at(&b, 0x20) as usize,
        u16_at(&b, 0x36),
        u16_at(&b, 0x38),
    );
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let p_type = u32_at(&b, ph);
        assert_ne!(p_type, PT_INTERP, "the binary asks for a dynamic loader");
        if p_type == PT_DYNAMIC {
            // A static-pie binary keeps a dynamic section for its own
            // relocations, but it must name no library.
            let (off, size) = (u64_at(&b, ph + 8) as usize, u64_at(&b, ph + 32) as usize);
            for e in (off..off + size).step_by(16) {
                match u64_at(&b, e) {
                    DT_NULL => break,
                    DT_NEEDED => panic!("the binary needs a shared library"),
                    _ => {}
                }
            }
        }
    }
}

#[test]
fn ldd_calls_it_static() {
    let Ok(out) = std::process::Command::new("ldd").arg(BIN).output() else {
        eprintln!("ldd not installed; the ELF check above still ran");
        return;
    };
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    // glibc's ldd says "not a dynamic executable" for a static non-PIE
    // binary (and "statically linked" for a static-pie, which we do not build).
    assert!(
        text.contains("not a dynamic executable"),
        "ldd {BIN}: {text}"
    );
}
