//! Plans, refusals and relocations on hand-written code, run for real where it matters,
//! and plans of the system's own libz and libc.

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic};
use object::{Object, ObjectSection, ObjectSymbol};

use crate::*;

const A: u64 = 0x10_0000;

fn refused(code: &[u8], inbound: &[u64]) -> Reason {
    let r = plan("f", code, A, inbound).unwrap_err();
    assert_eq!(r.function, "f");
    assert!(r.to_string().starts_with("f: "), "{r}");
    r.reason
}

fn decode(code: &[u8], ip: u64) -> Vec<Instruction> {
    Decoder::with_ip(64, code, ip, DecoderOptions::NONE).into_iter().collect()
}

#[test]
fn whole_instructions_of_at_least_five_bytes() {
    // push %rbp; mov %rsp,%rbp; sub $0x10,%rsp; leave; ret
    let code = [0x55, 0x48, 0x89, 0xe5, 0x48, 0x83, 0xec, 0x10, 0xc9, 0xc3];
    let p = plan("f", &code, A, &[A]).unwrap();
    assert_eq!((p.skip, p.len), (0, 8));
    assert_eq!(p.original, &code[..8]);
    assert_eq!(p.end(A), A + 8);
}

#[test]
fn endbr64_is_kept() {
    // endbr64; mov %edi,%eax; add $0x1,%eax; ret
    let code = [0xf3, 0x0f, 0x1e, 0xfa, 0x89, 0xf8, 0x83, 0xc0, 0x01, 0xc3];
    let p = plan("f", &code, A, &[A]).unwrap();
    assert_eq!((p.skip, p.len), (4, 5));
    assert_eq!(p.original, &code[4..9]);
}

#[test]
fn too_short() {
    assert_eq!(refused(&[0x31, 0xc0, 0xc3], &[]), Reason::TooShort { size: 3, need: 5 });
    let one = plan("f", &[0xc3], A, &[]).unwrap_err().to_string();
    assert_eq!(one, "f: 1 byte long, shorter than the 5 bytes the entry jump needs");
    let endbr_ret = [0xf3, 0x0f, 0x1e, 0xfa, 0x31, 0xc0, 0xc3];
    assert_eq!(refused(&endbr_ret, &[]), Reason::TooShort { size: 7, need: 9 });
}

#[test]
fn a_function_that_ends_within_five_bytes() {
    // xor %eax,%eax; ret; then padding
    let r = refused(&[0x31, 0xc0, 0xc3, 0x90, 0x90, 0x90, 0x90], &[]);
    assert!(matches!(r, Reason::Unsupported { at, .. } if at == A + 2), "{r:?}");
    assert!(r.to_string().contains("nothing falls through it"), "{r}");
}

#[test]
fn a_loop_at_the_top() {
    // top: cmpb $0,(%rdi); je out; inc %rdi; jmp top; out: ret
    let code = [0x80, 0x3f, 0x00, 0x74, 0x05, 0x48, 0xff, 0xc7, 0xeb, 0xf6, 0xc3];
    assert_eq!(refused(&code, &[]), Reason::BranchIntoDisplaced { from: A + 8, to: A });
    // A branch into the middle of the displaced bytes, from later in the function.
    // mov %edi,%eax; add $1,%eax; add $2,%eax; jne -7 (to A+2); ret
    let code = [0x89, 0xf8, 0x83, 0xc0, 0x01, 0x83, 0xc0, 0x02, 0x75, 0xf8, 0xc3];
    let r = refused(&code, &[]);
    assert_eq!(r, Reason::BranchIntoDisplaced { from: A + 8, to: A + 2 });
    assert_eq!(
        plan("zlibVersion", &code, A, &[]).unwrap_err().to_string(),
        "zlibVersion: a jump at 0x100008 lands at 0x100002, inside the first bytes the entry jump overwrites"
    );
}

#[test]
fn a_recursive_call_to_the_entry_is_fine() {
    // mov %edi,%eax; call f; ret  (call rel32 back to A)
    let code = [0x89, 0xf8, 0x90, 0x90, 0x90, 0xe8, 0xf6, 0xff, 0xff, 0xff, 0xc3];
    assert_eq!(plan("f", &code, A, &[]).unwrap().len, 5);
}

#[test]
fn references_from_elsewhere() {
    let code = [0x55, 0x48, 0x89, 0xe5, 0x48, 0x83, 0xec, 0x10, 0xc9, 0xc3];
    assert_eq!(refused(&code, &[A + 1]), Reason::ReferenceIntoDisplaced { at: A + 1 });
    // The entry and the first address after the overwritten bytes are fine.
    assert!(plan("f", &code, A, &[A, A + 8]).is_ok());
    // The function's own rip-relative operand into its first bytes:
    // lea -7(%rip),%rax would be A; lea -6(%rip) is A+1.
    let code = [0x48, 0x8d, 0x05, 0xfa, 0xff, 0xff, 0xff, 0xc3];
    assert_eq!(refused(&code, &[]), Reason::ReferenceIntoDisplaced { at: A + 1 });
}

#[test]
fn undecodable() {
    // push %es does not exist in 64-bit mode.
    assert_eq!(refused(&[0x90, 0x06, 0x90, 0x90, 0x90, 0x90], &[]), Reason::Undecodable { at: A + 1 });
    // An instruction cut by the symbol's end: mov $imm32,%eax missing a byte.
    assert_eq!(refused(&[0x90, 0x90, 0xb8, 0x01, 0x00, 0x00], &[]), Reason::Undecodable { at: A + 2 });
}

#[test]
fn unmovable_instructions() {
    let at = |r: Reason| match r {
        Reason::Unsupported { at, what } => (at - A, what),
        r => panic!("{r:?}"),
    };
    assert!(at(refused(&[0xcc, 0x90, 0x90, 0x90, 0x90, 0xc3], &[])).1.contains("int3"));
    // call *%rax; then more: the return address would be inside.
    let (off, what) = at(refused(&[0xff, 0xd0, 0x90, 0x90, 0x90, 0xc3], &[]));
    assert_eq!(off, 0);
    assert!(what.contains("return address"), "{what}");
    // xbegin
    assert!(at(refused(&[0xc7, 0xf8, 0, 0, 0, 0, 0xc3], &[])).1.contains("transactional"));
    // jmp *%rax before 5 bytes
    assert_eq!(at(refused(&[0xff, 0xe0, 0x90, 0x90, 0x90, 0x90], &[])).0, 0);
}

#[test]
fn rip_relative_load_reads_the_same_address_far_away() {
    // mov 0x1000(%rip),%rax; ret
    let code = [0x48, 0x8b, 0x05, 0x00, 0x10, 0x00, 0x00, 0xc3];
    let p = plan("f", &code, A, &[]).unwrap();
    let at = A + 0x4000_0000;
    let copy = relocate("f", &p, A, at).unwrap();
    let i = decode(&copy, at);
    assert_eq!(i[0].mnemonic(), Mnemonic::Mov);
    assert_eq!(i[0].ip_rel_memory_address(), A + 7 + 0x1000);
    assert_eq!(i[1].mnemonic(), Mnemonic::Jmp);
    assert_eq!(i[1].near_branch_target(), A + 7);
    assert_eq!(rip_map(&p, A, at), vec![(A, at)]);
    // Out of reach beyond 2 GiB.
    let far = A + 0x1_0000_0000;
    let r = relocate("f", &p, A, far).unwrap_err();
    assert_eq!(r.reason, Reason::OutOfReach { at: A, target: A + 0x1007, copy: far });
    assert!(rip_map(&p, A, far).is_empty());
}

#[test]
fn short_jcc_and_calls_are_lengthened_or_made_indirect() {
    // test %edi,%edi; je +6; mov $1,%eax; ret; L: mov $2,%eax; ret
    let code = [0x85, 0xff, 0x74, 0x06, 0xb8, 0x01, 0, 0, 0, 0xc3, 0xb8, 0x02, 0, 0, 0, 0xc3];
    let p = plan("f", &code, A, &[]).unwrap();
    assert_eq!(p.len, 9);
    for at in [A + 0x10_0000, A + 0x2_0000_0000] {
        let copy = relocate("f", &p, A, at).unwrap();
        assert!(copy.len() <= MAX_COPY);
        let map = rip_map(&p, A, at);
        assert_eq!(map.iter().map(|m| m.0).collect::<Vec<_>>(), [A, A + 2, A + 4]);
        assert_eq!(map[0].1, at);
        let i = decode(&copy, at);
        assert_eq!(i[0].mnemonic(), Mnemonic::Test);
        assert!(i.iter().all(|i| !i.is_invalid() || i.ip() >= map[2].1 + 5));
    }
    let near = decode(&relocate("f", &p, A, A + 0x10_0000).unwrap(), A + 0x10_0000);
    assert_eq!((near[1].mnemonic(), near[1].len(), near[1].near_branch_target()), (Mnemonic::Je, 6, A + 10));
    assert_eq!(near[3].near_branch_target(), A + 9);

    // call rel32 moved by 1 GiB still calls the same function.
    let code = [0xe8, 0xfb, 0x0f, 0x00, 0x00, 0xc3];
    let p = plan("f", &code, A, &[]).unwrap();
    let at = A + 0x4000_0000;
    let i = decode(&relocate("f", &p, A, at).unwrap(), at);
    assert_eq!((i[0].mnemonic(), i[0].near_branch_target()), (Mnemonic::Call, A + 0x1000));
}

/// Executable memory for the run tests.
struct Pages(*mut u8, usize);

impl Pages {
    fn new(len: usize, hint: usize) -> Pages {
        // SAFETY: an anonymous private mapping; no existing memory is affected
        // (MAP_FIXED_NOREPLACE fails rather than replace a mapping).
        let p = unsafe {
            libc::mmap(
                hint as *mut _,
                len,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | if hint != 0 { libc::MAP_FIXED_NOREPLACE } else { 0 },
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap at {hint:#x}");
        Pages(p.cast(), len)
    }
    fn addr(&self) -> u64 {
        self.0 as u64
    }
    fn write(&self, off: usize, bytes: &[u8]) {
        assert!(off + bytes.len() <= self.1);
        // SAFETY: within the mapping, which nothing else uses.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.0.add(off), bytes.len()) }
    }
    /// Call the code at `off` as `extern "C" fn(u64) -> u64`.
    fn call(&self, off: usize, arg: u64) -> u64 {
        // SAFETY: the tests write a complete function there that follows the C ABI.
        let f: extern "C" fn(u64) -> u64 = unsafe { std::mem::transmute(self.0.add(off)) };
        f(arg)
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        // SAFETY: our own mapping, no longer used.
        unsafe { libc::munmap(self.0.cast(), self.1) };
    }
}

/// Plan `code` at the start of `orig`, write its copy at `copy`, then spoil the
/// overwritten original bytes with int3 so that only the copy can have run them.
fn moved(orig: &Pages, code: &[u8], copy: &Pages) {
    orig.write(0, code);
    let p = plan("f", code, orig.addr(), &[]).unwrap();
    copy.write(0, &relocate("f", &p, orig.addr(), copy.addr()).unwrap());
    orig.write(usize::from(p.skip), &vec![0xcc; usize::from(p.len)]);
}

#[test]
fn relocated_copies_run() {
    let orig = Pages::new(0x1000, 0);
    let near = Pages::new(0x1000, 0);
    let far_hint = (orig.addr() as usize & !0xfff_ffff).wrapping_sub(0x2_0000_0000);
    let far = Pages::new(0x1000, far_hint);

    // mov 0x100-7(%rip),%rax; add %rdi,%rax; ret, with 1000 stored at +0x100.
    orig.write(0x100, &1000u64.to_le_bytes());
    moved(&orig, &[0x48, 0x8b, 0x05, 0xf9, 0x00, 0x00, 0x00, 0x48, 0x01, 0xf8, 0xc3], &near);
    assert_eq!(near.call(0, 5), 1005);

    // test %edi,%edi; je +6; mov $1,%eax; ret; mov $2,%eax; ret
    let code = [0x85, 0xff, 0x74, 0x06, 0xb8, 0x01, 0, 0, 0, 0xc3, 0xb8, 0x02, 0, 0, 0, 0xc3];
    for copy in [&near, &far] {
        moved(&orig, &code, copy);
        assert_eq!((copy.call(0, 0), copy.call(0, 7)), (2, 1));
    }

    // endbr64; call +0x80 (mov %rdi,%rax; ret); add $1,%rax; ret: returns into the copy,
    // which jumps back.
    orig.write(0x89, &[0x48, 0x89, 0xf8, 0xc3]);
    let code = [0xf3, 0x0f, 0x1e, 0xfa, 0xe8, 0x80, 0, 0, 0, 0x48, 0x83, 0xc0, 0x01, 0xc3];
    for copy in [&near, &far] {
        moved(&orig, &code, copy);
        assert_eq!(copy.call(0, 41), 42);
    }

    // xor %eax,%eax; mov $39,%al (getpid); syscall; ret: the system call runs in the copy.
    moved(&orig, &[0x31, 0xc0, 0xb0, 0x27, 0x0f, 0x05, 0xc3], &near);
    assert_eq!(near.call(0, 0), u64::from(std::process::id()));
}

fn system(path: &str, names: &[&str]) -> Vec<(String, Result<Plan, Refusal>)> {
    let data = std::fs::read(path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let inbound = inbound_addresses(&file);
    names
        .iter()
        .map(|&name| {
            let s = file.dynamic_symbols().find(|s| s.name() == Ok(name)).unwrap_or_else(|| panic!("{name} in {path}"));
            let section = file.section_by_index(s.section_index().unwrap()).unwrap();
            let off = (s.address() - section.address()) as usize;
            let code = &section.data().unwrap()[off..off + s.size() as usize];
            (name.to_string(), plan(name, code, s.address(), &inbound))
        })
        .collect()
}

#[test]
fn system_libz() {
    for (name, p) in system("/lib/x86_64-linux-gnu/libz.so.1", &["zlibVersion", "crc32", "adler32"]) {
        let p = p.unwrap_or_else(|r| panic!("{r}"));
        assert!(p.len >= 5, "{name}: {p:?}");
    }
}

#[test]
fn system_libc() {
    // atoi is a plain function; strlen, strnlen and wcslen are IFUNC symbols whose
    // address is the resolver (the implementations, __strlen_avx2 and friends, are not
    // exported): planning them plans the resolver.
    for (name, p) in system("/lib/x86_64-linux-gnu/libc.so.6", &["atoi", "strtol", "strlen", "strnlen", "wcslen"]) {
        let p = p.unwrap_or_else(|r| panic!("{r}"));
        assert!(p.len >= 5, "{name}: {p:?}");
    }
}

#[test]
fn inbound_finds_jump_tables_and_symbols() {
    let data = std::fs::read("/lib/x86_64-linux-gnu/libc.so.6").unwrap();
    let file = object::File::parse(&*data).unwrap();
    let inbound = inbound_addresses(&file);
    assert!(inbound.windows(2).all(|w| w[0] < w[1]));
    let atoi = file.dynamic_symbols().find(|s| s.name() == Ok("atoi")).unwrap().address();
    assert!(inbound.binary_search(&atoi).is_ok());
    assert!(inbound.len() > 10_000, "{}", inbound.len());
}

/// Hand-written assembly: `in_table` is reached at +2 only through the jump table of
/// `dispatch` (3 entries, bound-checked), `past_table` would be the 4th entry (the words
/// after the table), `in_data` is pointed to at +3 by a word in `.data` (a dynamic
/// relocation), `plain` by nothing.
const TABLES_S: &str = r#"
    .text
    .globl in_table, past_table, in_data, plain, dispatch
    .hidden in_table, past_table, in_data, plain
in_table:   nop; nop; nop; nop; nop; nop; nop; nop; ret
past_table: nop; nop; nop; nop; nop; nop; nop; nop; ret
in_data:    nop; nop; nop; nop; nop; nop; nop; nop; ret
plain:      nop; nop; nop; nop; nop; nop; nop; nop; ret
dispatch:
    cmp $2, %edi
    ja 1f
    lea table(%rip), %rdx
    movslq (%rdx,%rdi,4), %rax
    add %rdx, %rax
    jmp *%rax
1:  ret
    .section .rodata
    .p2align 2
table:
    .long plain - table, in_table + 2 - table, plain - table
    .long past_table + 1 - table
    .data
    .quad in_data + 3
"#;

#[test]
fn inbound_from_jump_tables_and_relocations() {
    let dir = std::env::temp_dir().join(format!("pulp-unpadded-tables-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (s, so) = (dir.join("tables.s"), dir.join("libtables.so"));
    std::fs::write(&s, TABLES_S).unwrap();
    let built =
        std::process::Command::new("cc").args(["-shared", "-nostdlib", "-o"]).arg(&so).arg(&s).status().unwrap();
    assert!(built.success());
    let data = std::fs::read(&so).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let inbound = inbound_addresses(&file);
    let sym = |name: &str| file.symbols().find(|s| s.name() == Ok(name)).unwrap().address();
    let code = [0x90; 9];
    let at = |name: &str| plan(name, &code, sym(name), &inbound).map(|p| p.len).map_err(|r| r.reason);
    assert_eq!(at("in_table"), Err(Reason::ReferenceIntoDisplaced { at: sym("in_table") + 2 }));
    assert_eq!(at("in_data"), Err(Reason::ReferenceIntoDisplaced { at: sym("in_data") + 3 }));
    assert_eq!(at("past_table"), Ok(5), "the bound check says 3 entries");
    assert_eq!(at("plain"), Ok(5));
}
