use super::*;

#[test]
fn reply_round_trips() {
    let mut unpadded = FuncReply::new(0x5000, 0x6000, EntryAction::Redirect, [0x55, 0x48], crate::Prologue::Unpadded);
    unpadded.slot = 0x7000;
    unpadded.skip = 4;
    unpadded.len = 6;
    unpadded.displaced[..6].copy_from_slice(&[0x55, 0x48, 0x89, 0xe5, 0x31, 0xc0]);
    let funcs = vec![
        FuncReply::new(0x1000, 0x2000, EntryAction::Redirect, [0x66, 0x90], crate::Prologue::NopPad66),
        FuncReply::new(0x3000, 0x4000, EntryAction::Restore, [0x90, 0x90], crate::Prologue::EndbrNopPad),
        unpadded,
    ];
    let mut buf = [0u8; 256];
    let n = encode_reply(&funcs, &mut buf).unwrap();
    assert_eq!(decode_reply(&buf[..n]).unwrap(), funcs);
    assert!(decode_reply(&buf[..n - 1]).is_none());
    let d = decode_reply(&buf[..n]).unwrap()[2].displaced();
    assert_eq!((d.skip, d.original), (4, vec![0x55, 0x48, 0x89, 0xe5, 0x31, 0xc0]));
}

#[test]
fn request_and_thread_log_round_trip() {
    let req = Request {
        op: Op::Apply,
        arg: 7,
        meta: b"meta",
        gates: vec![1, 2, 3],
        inside: vec![(4, 5)],
        object: b"\x7fELF...",
        target: b"id",
    };
    let r = req.encode();
    assert_eq!(Request::decode(&r), Some(req));
    for cut in 0..r.len() {
        assert_eq!(Request::decode(&r[..cut]), None);
    }
    let log = ThreadLog::encode(&[(10, 0x1000), (11, 0x2000)], 4);
    assert_eq!(ThreadLog::decode(&log, 4), vec![(10, 0x1000), (11, 0x2000)]);
    assert_eq!(ThreadLog::decode(&log, 1), vec![(10, 0x1000)]);
}

#[test]
fn runtime_info_decodes_every_word() {
    let words: Vec<u8> = (0..RuntimeInfo::SIZE as u64 / 8).flat_map(|i| i.to_le_bytes()).collect();
    let info = RuntimeInfo::from_bytes(&words).unwrap();
    assert_eq!((info.magic, info.traps), (0, RuntimeInfo::SIZE as u64 / 8 - 1));
}

#[test]
fn message_round_trips_and_is_cut_to_fit() {
    let mut buf = [0u8; 10];
    encode_message("symbol missing", &mut buf);
    assert_eq!(decode_message(&buf), "sym…");
    // A message longer than the limit is cut on a character boundary, and readable.
    let long = format!("function `{}` is missing", "é".repeat(MAX_MESSAGE));
    let mut buf = vec![0u8; 1 << 16];
    encode_message(&long, &mut buf);
    let len = u32::from_le_bytes(buf[..4].try_into().unwrap());
    let back = decode_message(&buf[..message_bytes(len)]);
    assert!(back.starts_with("function `éé") && back.ends_with('…') && back.len() <= MAX_MESSAGE, "{}", back.len());
}

#[test]
fn request_decoder_never_panics() {
    let req = Request { meta: b"m", gates: vec![9], inside: vec![(1, 2)], ..Request::new(Op::Revert) }.encode();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..20_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut b = req.clone();
        let i = (state % b.len() as u64) as usize;
        b[i] = (state >> 32) as u8;
        if let Some(r) = Request::decode(&b) {
            assert_eq!(r.encode(), b);
        }
    }
}

#[test]
fn message_ring_reads_back_in_order() {
    let mut area = vec![0u8; MessageRing::HEADER + 16];
    let mut total = 0u64;
    for line in ["one\n", "two\n", "three\n", "four\n"] {
        for &b in line.as_bytes() {
            area[MessageRing::HEADER + (total % 16) as usize] = b;
            total += 1;
        }
    }
    area[8..16].copy_from_slice(&total.to_le_bytes());
    assert_eq!(MessageRing::decode(&area), ["two", "three", "four"]);
}
