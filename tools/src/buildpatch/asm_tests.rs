//! Unit tests of `asm`: reading gcc's and clang's assembly into statements and chunks.

use super::*;

const GCC: &str = r#"
	.file	"t.c"
	.text
	.section	.text.helper2,"ax",@progbits
	.p2align 4
	.type	helper2, @function
helper2:
.LFB12:
	.cfi_startproc
.L2:
	movabsq	$_GLOBAL_OFFSET_TABLE_-.L2, %r11
	movabsq	$calls.0@GOTOFF, %rcx  # a comment
	ret
	.cfi_endproc
.LFE12:
	.size	helper2, .-helper2
	.section	.rodata.f.str1.1,"aMS",@progbits,1
.LC0:
	.string	"hello # %d;\n"
	.section	.rodata.f,"a",@progbits
	.align 8
.L7:
	.quad	.L4-.L7
	.section	.text.helper2
	lock xaddl %eax, (%rdx)
	.section	.bss.calls.0,"aw",@nobits
	.align 4
	.type	calls.0, @object
	.size	calls.0, 4
calls.0:
	.zero	4
	.globl	g
	.hidden	g
	.section	.note.GNU-stack,"",@progbits
"#;

#[test]
fn sections_attributes_and_chunks() {
    let u = Unit::parse(GCC);
    assert_eq!(u.file.as_deref(), Some("t.c"));
    let names: Vec<&str> = u.sections.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, [".text", ".text.helper2", ".rodata.f.str1.1", ".rodata.f", ".bss.calls.0", ".note.GNU-stack"]);
    let text = u.section(".text.helper2").unwrap();
    assert!(text.is_code() && !text.is_writable());
    assert_eq!(text.header, ".section .text.helper2,\"ax\",@progbits");
    assert_eq!(text.stmts.last().unwrap().text, "lock xaddl %eax, (%rdx)", "back in the section after a switch");
    assert!(text.stmts.iter().any(|s| s.text == ".size\thelper2, .-helper2"), "position-dependent .size stays");
    assert_eq!(u.attrs["helper2"].kind.as_deref(), Some("function"));
    assert!(u.attrs["g"].global && u.attrs["g"].hidden);
    assert_eq!(u.attrs["calls.0"].stmts, [".type\tcalls.0, @object", ".size\tcalls.0, 4"]);
    assert!(u.section(".rodata.f.str1.1").unwrap().stmts[1].text.contains("\"hello # %d;\\n\""));

    let chunks = u.chunks();
    let by_label: HashMap<&str, &Chunk> = chunks.iter().map(|c| (c.labels[0].as_str(), c)).collect();
    let h = by_label["helper2"];
    assert_eq!((h.start, h.end), (0, text.stmts.len()), "the alignment before it is part of it");
    assert_eq!(by_label[".L7"].start, 0);
    assert_eq!(by_label["calls.0"].labels, ["calls.0"]);
    assert!(!by_label.contains_key(".L2"), "local labels of code belong to their function");
}

#[test]
fn a_cold_part_starts_with_its_section_and_cfi_startproc() {
    let u = Unit::parse(
        "\t.section\t.text.unlikely.f,\"ax\",@progbits\n.LCOLDB2:\n\t.section\t.text.f,\"ax\",@progbits\n\
         f:\n\t.cfi_startproc\n\tjs\t.L3\n\tret\n\t.cfi_endproc\n\t.section\t.text.unlikely.f\n\
         \t.cfi_startproc\n\t.type\tf.cold, @function\nf.cold:\n.L3:\n\tud2\n\t.cfi_endproc\n",
    );
    let chunks = u.chunks();
    let cold = chunks.iter().find(|c| c.labels == ["f.cold"]).unwrap();
    let texts: Vec<&str> =
        u.sections[cold.section].stmts[cold.start..cold.end].iter().map(|s| s.text.as_str()).collect();
    assert_eq!(&texts[..3], [".LCOLDB2:", ".cfi_startproc", "f.cold:"]);
}

#[test]
fn references_with_their_specifiers() {
    let s = parse_stmt("movabsq\t$calls.0@GOTOFF, %rcx");
    let r = refs(&s);
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].name.as_str(), r[0].spec.as_deref()), ("calls.0", Some("gotoff")));
    assert_eq!(&s.text[r[0].start..r[0].end], "calls.0@GOTOFF");
    let s = parse_stmt("leaq	tls_static@tlsld(%rip), %rdi");
    assert_eq!(refs(&s)[0].spec.as_deref(), Some("tlsld"));
    let s = parse_stmt("callq	__tls_get_addr@PLT");
    assert_eq!(refs(&s)[0].spec.as_deref(), Some("plt"));
    let s = parse_stmt("movl	$0x1f, 8(%rax,%rbx,4)");
    assert!(refs(&s).is_empty());
    let s = parse_stmt(".quad	.L4-.L7");
    assert_eq!(refs(&s).iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), [".L4", ".L7"]);
    let s = parse_stmt(".string \"a b c\"");
    assert!(refs(&s).is_empty());
    let s = parse_stmt("data16 leaq x@TLSGD(%rip), %rdi");
    assert!(matches!(&s.kind, StmtKind::Insn { mnemonic, .. } if mnemonic == "data16 leaq"));
    assert_eq!(refs(&s)[0].spec.as_deref(), Some("tlsgd"));
    assert!(is_branch("jne") && is_branch("callq") && !is_branch("movq"));
    assert!(uses_location(" .-helper2") && !uses_location(" .Lfunc_end0-f") && !uses_location(" 4"));
}
