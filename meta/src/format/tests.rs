use super::*;

fn sample() -> PatchMeta {
    PatchMeta {
        flags: FLAG_IMMEDIATE,
        level: 3,
        patch_so: "/opt/fix/libfix.so".into(),
        patch_build_id: vec![0xde, 0xad, 0xbe, 0xef],
        patch_sha256: [7; 32],
        labels: vec!["CVE-2026-1234".into(), "fix parse".into()],
        states: vec![State { id: 42, version: 2 }],
        targets: vec![
            Target {
                path: "/usr/lib/libfoo.so".into(),
                build_id: vec![1, 2, 3],
                functions: vec![
                    Function {
                        old: "foo_parse".into(),
                        offset: 0x1130,
                        prologue: Prologue::NopPad66,
                        displaced: None,
                        new: "foo_parse_fixed".into(),
                    },
                    Function {
                        old: "foo_len".into(),
                        offset: 0x1190,
                        prologue: Prologue::NopPad90,
                        displaced: None,
                        new: "foo_len_fixed".into(),
                    },
                    Function {
                        old: "f".into(),
                        offset: u64::MAX,
                        prologue: Prologue::FentryCall,
                        displaced: None,
                        new: "g".into(),
                    },
                ],
                references: vec![Reference {
                    symbol: "counter".into(),
                    offset: 0x4010,
                    kind: RefKind::Address,
                    var: "ref_counter".into(),
                }],
            },
            Target {
                path: "/usr/lib/libbar.so".into(),
                build_id: vec![9; 20],
                functions: vec![Function {
                    old: "bar".into(),
                    offset: 0x10,
                    prologue: Prologue::EndbrNopPad,
                    displaced: None,
                    new: "bar2".into(),
                }],
                references: vec![],
            },
        ],
    }
}

/// Re-frame a (possibly modified) payload with a correct header and checksum.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    put_u32(&mut out, FORMAT_VERSION);
    put_u32(&mut out, payload.len() as u32);
    out.extend_from_slice(payload);
    put_u32(&mut out, crc32(payload));
    out
}

fn payload_of(bytes: &[u8]) -> Vec<u8> {
    bytes[HEADER_LEN..bytes.len() - 4].to_vec()
}

fn decode_with(m: &PatchMeta) -> Result<PatchMeta, MetaError> {
    PatchMeta::decode(&frame(&payload_of(&m.encode())))
}

#[test]
fn crc32_matches_reference_values() {
    assert_eq!(crc32(b""), 0);
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32(b"The quick brown fox jumps over the lazy dog"), 0x414F_A339);
}

#[test]
fn round_trips() {
    let m = sample();
    let bytes = m.encode();
    assert_eq!(&bytes[..8], b"PULPMETA");
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), FORMAT_VERSION);
    assert_eq!(PatchMeta::decode(&bytes).unwrap(), m);
    assert_eq!(m.id().len(), 32);
    assert_eq!(m.short_id(), m.id()[..12]);
}

#[test]
fn identity_covers_what_the_patch_does_not_how_it_is_named() {
    let m = sample();
    let mut same = m.clone();
    same.labels.push("another label".into());
    same.level = 9;
    same.patch_so = "/etc/pulp/patches.d/fix.so".into();
    assert_eq!(m.id(), same.id(), "labels, level and the .so's location are not the identity");
    let changed: [fn(&mut PatchMeta); 6] = [
        |m| m.targets[0].functions.pop().map(drop).unwrap_or(()),
        |m| m.targets[0].functions[0].new = "other".into(),
        |m| m.targets[1].build_id[0] ^= 1,
        |m| m.targets[0].references.clear(),
        |m| m.patch_sha256[0] ^= 1,
        |m| m.states[0].version += 1,
    ];
    for (i, change) in changed.iter().enumerate() {
        let mut other = m.clone();
        change(&mut other);
        assert_ne!(m.id(), other.id(), "change {i} must change the id");
    }
}

#[test]
fn bad_magic_and_version() {
    let mut b = sample().encode();
    b[0] = b'X';
    assert_eq!(PatchMeta::decode(&b), Err(MetaError::BadMagic));
    assert_eq!(PatchMeta::decode(b""), Err(MetaError::BadMagic));
    assert_eq!(PatchMeta::decode(b"\x7fELF"), Err(MetaError::BadMagic));
    assert!(matches!(PatchMeta::decode(b"PULP"), Err(MetaError::Truncated { .. })));
    let mut b = sample().encode();
    b[8] = 7;
    let e = PatchMeta::decode(&b).unwrap_err();
    assert_eq!(e, MetaError::UnsupportedVersion { found: 7 });
    assert!(e.to_string().contains("version 7"));
}

#[test]
fn unknown_flags_are_refused() {
    let mut m = sample();
    m.flags |= 0x80;
    let e = decode_with(&m).unwrap_err();
    assert_eq!(e, MetaError::UnknownFlags { flags: FLAG_IMMEDIATE | 0x80 });
    assert!(e.to_string().contains("newer"), "{e}");
    m.flags = FLAG_REPLACE | FLAG_IMMEDIATE;
    assert!(decode_with(&m).is_ok());
}

#[test]
fn truncation_names_the_field() {
    let b = sample().encode();
    assert_eq!(PatchMeta::decode(&b[..10]), Err(truncated("version")));
    assert_eq!(PatchMeta::decode(&b[..14]), Err(truncated("payload length")));
    assert_eq!(PatchMeta::decode(&b[..40]), Err(truncated("payload")));
    assert_eq!(PatchMeta::decode(&b[..b.len() - 1]), Err(truncated("checksum")));
    // A payload cut inside the last target: the header says it is shorter, checksum agrees.
    let p = payload_of(&b);
    let e = PatchMeta::decode(&frame(&p[..p.len() - 3])).unwrap_err();
    assert_eq!(e, truncated("targets[1].references count"));
    let e = PatchMeta::decode(&frame(&p[..p.len() - 5])).unwrap_err();
    assert_eq!(e, truncated("targets[1].functions[0].new"));
    assert_eq!(e.to_string(), "truncated patch.meta: data ends while reading targets[1].functions[0].new");
    let e = PatchMeta::decode(&frame(&p[..2])).unwrap_err();
    assert_eq!(e, truncated("flags"));
    let e = PatchMeta::decode(&frame(&p[..6])).unwrap_err();
    assert_eq!(e, truncated("level"));
}

#[test]
fn truncation_inside_first_target_references() {
    let mut m = sample();
    m.targets.truncate(1);
    let p = payload_of(&m.encode());
    // The last field is the reference's `var` ("ref_counter", 4 + 11 bytes).
    let e = PatchMeta::decode(&frame(&p[..p.len() - 1])).unwrap_err();
    assert_eq!(e, truncated("targets[0].references[0].var"));
    let e = PatchMeta::decode(&frame(&p[..p.len() - 13])).unwrap_err();
    assert_eq!(e, truncated("targets[0].references[0].var length"));
}

#[test]
fn checksum_and_trailing_bytes() {
    let mut b = sample().encode();
    let n = b.len();
    b[n - 10] ^= 0x40;
    let e = PatchMeta::decode(&b).unwrap_err();
    assert!(matches!(e, MetaError::ChecksumMismatch { .. }), "{e}");
    assert!(e.to_string().contains("expected 0x"));
    let mut b = sample().encode();
    b.push(0);
    assert_eq!(PatchMeta::decode(&b), Err(MetaError::TrailingBytes { count: 1, after_file: true }));
    let mut p = payload_of(&sample().encode());
    p.extend_from_slice(&[1, 2, 3]);
    assert_eq!(PatchMeta::decode(&frame(&p)), Err(MetaError::TrailingBytes { count: 3, after_file: false }));
}

#[test]
fn invalid_utf8_unknown_prologue_and_reference_kind() {
    let mut m = sample();
    m.targets[0].functions[1].new = "zzzz_fixed".into();
    let mut p = payload_of(&m.encode());
    let at = p.windows(4).position(|w| w == b"zzzz").unwrap();
    p[at] = 0xff;
    let e = PatchMeta::decode(&frame(&p)).unwrap_err();
    assert_eq!(e, MetaError::InvalidUtf8 { field: "targets[0].functions[1].new".into() });

    let m = sample();
    let mut p = payload_of(&m.encode());
    // The prologue byte of targets[1].functions[0] precedes its `new` ("bar2", 4+4
    // bytes), which precedes the reference count (4 bytes).
    let at = p.len() - 4 - 8 - 1;
    assert_eq!(p[at], Prologue::EndbrNopPad as u8);
    p[at] = 99;
    let e = PatchMeta::decode(&frame(&p)).unwrap_err();
    assert_eq!(e, MetaError::UnknownPrologue { field: "targets[1].functions[0].prologue".into(), value: 99 });
    assert!(e.to_string().contains("targets[1].functions[0].prologue"));

    let mut p = payload_of(&m.encode());
    let at = p.windows(11).position(|w| w == b"ref_counter").unwrap() - 4 - 1;
    assert_eq!(p[at], RefKind::Address as u8);
    p[at] = 0;
    let e = PatchMeta::decode(&frame(&p)).unwrap_err();
    assert_eq!(e, MetaError::UnknownValue { field: "targets[0].references[0].kind".into(), value: 0 });
}

#[test]
fn semantic_errors() {
    let mut m = sample();
    m.targets[0].functions[2].old.clear();
    assert_eq!(decode_with(&m), Err(MetaError::Empty { field: "targets[0].functions[2].old".into() }));

    let mut m = sample();
    m.targets[0].references[0].var.clear();
    assert_eq!(decode_with(&m), Err(MetaError::Empty { field: "targets[0].references[0].var".into() }));

    let mut m = sample();
    m.patch_so = "fix.so".into();
    assert!(matches!(decode_with(&m), Err(MetaError::NotAbsolute { .. })));

    let mut m = sample();
    m.patch_so.clear();
    assert_eq!(decode_with(&m), Err(MetaError::Empty { field: "patch_so".into() }));

    let mut m = sample();
    m.targets.clear();
    assert_eq!(decode_with(&m), Err(MetaError::NoTargets));

    let mut m = sample();
    m.targets[1].functions.clear();
    assert_eq!(decode_with(&m), Err(MetaError::NoFunctions { field: "targets[1]".into() }));

    let mut m = sample();
    m.targets[1].path.clear();
    assert_eq!(decode_with(&m), Err(MetaError::Empty { field: "targets[1].path".into() }));

    let mut m = sample();
    m.patch_build_id.clear();
    assert_eq!(decode_with(&m), Err(MetaError::Empty { field: "patch_build_id".into() }));

    let mut m = sample();
    m.states.push(State { id: 42, version: 1 });
    assert_eq!(decode_with(&m), Err(MetaError::DuplicateState { id: 42 }));

    // A hash of the wrong length.
    let m = sample();
    let mut p = Vec::new();
    put_u32(&mut p, m.flags);
    put_u32(&mut p, 0);
    put_bytes(&mut p, b"/x.so");
    put_bytes(&mut p, b"id");
    put_bytes(&mut p, &[1; 31]);
    let e = PatchMeta::decode(&frame(&p)).unwrap_err();
    assert_eq!(e, MetaError::BadLength { field: "patch_sha256".into(), len: 31, expected: 32 });
}

#[test]
fn too_large() {
    let mut m = sample();
    m.labels[1] = "x".repeat(MAX_FIELD_LEN + 1);
    let e = decode_with(&m).unwrap_err();
    assert_eq!(e, MetaError::TooLarge { field: "labels[1]".into(), value: 4097, max: MAX_FIELD_LEN });
    assert!(m.validate().is_err());

    // A huge count must be refused before anything is allocated.
    let mut p = Vec::new();
    put_u32(&mut p, 1);
    put_u32(&mut p, 0);
    put_bytes(&mut p, b"/x.so");
    put_bytes(&mut p, b"id");
    put_bytes(&mut p, &[0; 32]);
    put_u32(&mut p, 0);
    put_u32(&mut p, 0);
    put_u32(&mut p, u32::MAX);
    let e = PatchMeta::decode(&frame(&p)).unwrap_err();
    assert_eq!(e, MetaError::TooLarge { field: "targets count".into(), value: u32::MAX as u64, max: MAX_COUNT });

    let mut p = Vec::new();
    put_u32(&mut p, 1);
    put_u32(&mut p, 0);
    put_u32(&mut p, u32::MAX);
    let e = PatchMeta::decode(&frame(&p)).unwrap_err();
    assert!(matches!(e, MetaError::TooLarge { ref field, .. } if field == "patch_so"), "{e}");
}

/// Every truncation and many random byte flips: an error or a value, never a panic.
#[test]
fn never_panics_on_damaged_input() {
    let good = sample().encode();
    for n in 0..good.len() {
        assert!(PatchMeta::decode(&good[..n]).is_err());
    }
    let p = payload_of(&good);
    for n in 0..p.len() {
        assert!(PatchMeta::decode(&frame(&p[..n])).is_err(), "payload cut at {n}");
    }
    // xorshift: deterministic pseudo-random flips, both through the checksum and past it.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let mut b = good.clone();
        let flips = 1 + next() % 4;
        for _ in 0..flips {
            let i = (next() % b.len() as u64) as usize;
            b[i] ^= 1 << (next() % 8);
        }
        let _ = PatchMeta::decode(&b);
        let mut q = p.clone();
        for _ in 0..flips {
            let i = (next() % q.len() as u64) as usize;
            q[i] = next() as u8;
        }
        if let Ok(m) = PatchMeta::decode(&frame(&q)) {
            // Whatever decodes must re-encode to the same payload.
            assert_eq!(payload_of(&m.encode()), q);
        }
    }
}
