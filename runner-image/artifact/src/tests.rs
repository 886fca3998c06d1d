use super::*;

/// A small deterministic generator (xorshift64*), so "random" modules and part sizes are the
/// same on every run and a failure can be reproduced from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Bytes that compress somewhat: random runs mixed with repeated text, like a real module.
fn module_like(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        if rng.below(2) == 0 {
            out.extend_from_slice(b"\0asm\x01\0\0\0 wasi_snapshot_preview1 fd_write ");
        } else {
            let run = rng.below(64) as usize;
            out.extend(rng.bytes(run));
        }
    }
    out.truncate(len);
    out
}

fn from_parts(packed: &Packed) -> impl FnMut(&str) -> Result<Vec<u8>, Error> + '_ {
    |name| {
        packed
            .parts
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.clone())
            .ok_or_else(|| Error::MissingPart {
                name: name.into(),
                detail: "test".into(),
            })
    }
}

fn assert_round_trip(module: &[u8], part_bytes: usize, compression: Compression) -> Packed {
    let packed = pack_with(module, WASM_MEDIA_TYPE, part_bytes, compression);
    let m = &packed.manifest;
    assert_eq!(m.size, module.len() as u64);
    assert_eq!(m.digest, sha256_digest(module));
    assert_eq!(m.parts.len(), packed.parts.len());
    let stored: Vec<u8> = packed.parts.iter().flat_map(|(_, b)| b.clone()).collect();
    assert_eq!(m.compressed_size, stored.len() as u64);
    let part_bytes = part_bytes.max(1);
    let expected_parts = stored.len().div_ceil(part_bytes).max(1);
    assert_eq!(packed.parts.len(), expected_parts, "part count");
    for (index, ((name, bytes), part)) in packed.parts.iter().zip(&m.parts).enumerate() {
        assert_eq!(name, &part.name);
        assert_eq!(part.size, bytes.len() as u64);
        assert_eq!(part.digest, sha256_digest(bytes));
        assert!(bytes.len() <= part_bytes);
        if index + 1 < packed.parts.len() {
            assert_eq!(bytes.len(), part_bytes, "only the last part may be short");
        }
    }
    m.validate().expect("a packed manifest is valid");
    assert_eq!(unpack(m, from_parts(&packed)).expect("unpacks"), module);
    assert_eq!(packed.unpack().expect("unpacks"), module);
    packed
}

#[test]
fn round_trips_at_part_boundaries() {
    // Without compression the stored size is the module size, so the boundaries are exact.
    let mut rng = Rng(7);
    for part_bytes in [1, 2, 7, 64, 1000] {
        for len in [
            0,
            1,
            part_bytes - 1,
            part_bytes,
            part_bytes + 1,
            3 * part_bytes - 1,
            3 * part_bytes,
            3 * part_bytes + 1,
        ] {
            let module = rng.bytes(len);
            let packed = assert_round_trip(&module, part_bytes, Compression::None);
            let expected = len.div_ceil(part_bytes).max(1);
            assert_eq!(packed.parts.len(), expected, "len {len} part {part_bytes}");
        }
    }
}

#[test]
fn gzip_round_trips_at_part_boundaries_of_the_compressed_stream() {
    let mut rng = Rng(11);
    let module = module_like(&mut rng, 50_000);
    let stored = pack(&module, WASM_MEDIA_TYPE, usize::MAX)
        .manifest
        .compressed_size as usize;
    assert!(stored < module.len(), "module-like bytes compress");
    for part_bytes in [
        stored - 1,
        stored,
        stored + 1,
        stored / 3,
        stored / 3 + 1,
        1,
    ] {
        assert_round_trip(&module, part_bytes, Compression::Gzip);
    }
    assert_eq!(
        pack(&module, WASM_MEDIA_TYPE, stored).parts.len(),
        1,
        "exactly one full part"
    );
    assert_eq!(pack(&module, WASM_MEDIA_TYPE, stored - 1).parts.len(), 2);
}

#[test]
fn empty_module_is_one_part() {
    for compression in [Compression::Gzip, Compression::None] {
        let packed = assert_round_trip(b"", DEFAULT_PART_BYTES, compression);
        assert_eq!(packed.parts.len(), 1);
        assert_eq!(
            packed.manifest.digest,
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
    let packed = pack(b"", WASM_MEDIA_TYPE, 0);
    assert_eq!(packed.unpack().expect("unpacks"), b"");
}

#[test]
fn zero_part_bytes_counts_as_one() {
    let packed = assert_round_trip(b"abc", 0, Compression::None);
    assert_eq!(packed.parts.len(), 3);
}

#[test]
fn property_random_modules_and_part_sizes_round_trip_and_detect_any_flipped_byte() {
    for seed in 1..=150u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let len = rng.below(20_000) as usize;
        let module = if seed % 2 == 0 {
            module_like(&mut rng, len)
        } else {
            rng.bytes(len)
        };
        let part_bytes = 1 + rng.below(4096) as usize;
        let compression = if seed % 3 == 0 {
            Compression::None
        } else {
            Compression::Gzip
        };
        let mut packed = assert_round_trip(&module, part_bytes, compression);

        // Any flipped bit in any part is caught, and named.
        let part = rng.below(packed.parts.len() as u64) as usize;
        if packed.parts[part].1.is_empty() {
            continue;
        }
        let at = rng.below(packed.parts[part].1.len() as u64) as usize;
        packed.parts[part].1[at] ^= 1 << rng.below(8);
        let error = unpack(&packed.manifest, from_parts(&packed)).expect_err("corruption");
        assert!(
            matches!(&error, Error::PartDigest { name, .. } if *name == packed.parts[part].0),
            "seed {seed}: {error}"
        );
    }
}

#[test]
fn packing_is_deterministic() {
    let module = module_like(&mut Rng(3), 10_000);
    assert_eq!(
        pack(&module, WASM_MEDIA_TYPE, 1000),
        pack(&module, WASM_MEDIA_TYPE, 1000)
    );
}

#[test]
fn parts_are_one_plain_gzip_stream() {
    let module = module_like(&mut Rng(5), 30_000);
    let packed = pack(&module, WASM_MEDIA_TYPE, 1024);
    assert!(packed.parts.len() > 2);
    assert_eq!(packed.parts[0].0, "module.gz.000");
    assert_eq!(packed.parts[2].0, "module.gz.002");
    let stored: Vec<u8> = packed.parts.iter().flat_map(|(_, b)| b.clone()).collect();
    let mut plain = Vec::new();
    GzDecoder::new(&stored[..])
        .read_to_end(&mut plain)
        .expect("gunzip");
    assert_eq!(plain, module);
}

#[test]
fn manifest_json_is_camel_case_with_lower_case_compression() {
    let packed = pack(b"\0asm\x01\0\0\0", WASM_MEDIA_TYPE, DEFAULT_PART_BYTES);
    let value: serde_json::Value = serde_json::from_str(&packed.manifest.to_json()).expect("json");
    assert_eq!(value["apiVersion"], "wasmfn.dev/v1alpha1");
    assert_eq!(value["kind"], "ArtifactManifest");
    assert_eq!(value["mediaType"], "application/wasm");
    assert_eq!(value["compression"], "gzip");
    assert_eq!(value["size"], 8);
    assert!(value["compressedSize"].as_u64().is_some());
    assert_eq!(value["parts"][0]["name"], "module.gz.000");
    assert!(value["parts"][0]["digest"]
        .as_str()
        .is_some_and(|d| d.starts_with("sha256:")));
    let back = ArtifactManifest::from_json(packed.manifest.to_json().as_bytes()).expect("parses");
    assert_eq!(back, packed.manifest);
}

#[test]
fn a_corrupted_part_is_named_with_both_digests() {
    let module = Rng(9).bytes(5000);
    let mut packed = pack(&module, WASM_MEDIA_TYPE, 2000);
    packed.parts[1].1[10] ^= 0xff;
    let error = packed.unpack().expect_err("corrupt");
    let text = error.to_string();
    assert_eq!(error.reason(), "PartDigest");
    assert!(text.contains("module.gz.001"), "{text}");
    assert!(text.contains("digest mismatch"), "{text}");
    assert!(text.contains(&packed.manifest.parts[1].digest), "{text}");
    assert!(text.contains(&sha256_digest(&packed.parts[1].1)), "{text}");
}

#[test]
fn a_truncated_part_is_reported_by_size() {
    let module = Rng(10).bytes(5000);
    let mut packed = pack(&module, WASM_MEDIA_TYPE, 2000);
    packed.parts[0].1.truncate(100);
    let error = packed.unpack().expect_err("truncated");
    assert!(
        matches!(error, Error::PartSize { ref name, expected: 2000, actual: 100 } if name == "module.gz.000"),
        "{error}"
    );
}

#[test]
fn a_missing_part_is_named() {
    let module = Rng(12).bytes(5000);
    let mut packed = pack(&module, WASM_MEDIA_TYPE, 2000);
    packed.parts.remove(2);
    let error = packed.unpack().expect_err("missing");
    assert_eq!(error.reason(), "MissingPart");
    assert!(error.to_string().contains("module.gz.002"), "{error}");
}

#[test]
fn consistent_parts_of_another_module_fail_the_module_digest() {
    // Someone rewrote the parts and their digests but not the module digest (or mixed two
    // artifacts' manifests): the module digest is the last line of defence.
    let module = Rng(13).bytes(3000);
    let other = Rng(14).bytes(3000);
    let packed = pack(&module, WASM_MEDIA_TYPE, 1000);
    let mut forged = pack(&other, WASM_MEDIA_TYPE, 1000);
    forged.manifest.digest = packed.manifest.digest.clone();
    let error = forged.unpack().expect_err("wrong module");
    assert!(
        matches!(&error, Error::DigestMismatch { expected, actual }
            if *expected == packed.manifest.digest && *actual == sha256_digest(&other)),
        "{error}"
    );
    assert!(error.to_string().contains("module digest mismatch"));
}

#[test]
fn a_stream_that_is_not_gzip_is_reported() {
    let mut packed = pack_with(b"not gzip at all", WASM_MEDIA_TYPE, 1000, Compression::None);
    packed.manifest.compression = Compression::Gzip;
    let error = packed.unpack().expect_err("not gzip");
    assert_eq!(error.reason(), "Decompress", "{error}");
}

#[test]
fn decompression_stops_at_the_declared_size() {
    // 64 MiB of zeros gzip to ~64 KiB: a manifest declaring 1 KiB must not make the reader
    // produce 64 MiB.
    let bomb = vec![0u8; 64 << 20];
    let mut packed = pack(&bomb, WASM_MEDIA_TYPE, DEFAULT_PART_BYTES);
    assert!(packed.manifest.compressed_size < 1 << 20);
    packed.manifest.size = 1024;
    let error = packed.unpack().expect_err("bomb");
    assert!(matches!(error, Error::TooLarge { limit: 1024 }), "{error}");
    // Declaring too much is caught as well.
    let mut short = pack(b"short", WASM_MEDIA_TYPE, DEFAULT_PART_BYTES);
    short.manifest.size = 6;
    let error = short.unpack().expect_err("short");
    assert!(
        matches!(
            error,
            Error::SizeMismatch {
                expected: 6,
                actual: 5
            }
        ),
        "{error}"
    );
}

#[test]
fn oversized_manifests_are_refused_before_any_part_is_read() {
    let packed = pack(b"\0asm", WASM_MEDIA_TYPE, DEFAULT_PART_BYTES);
    let never = |_: &str| -> Result<Vec<u8>, Error> { panic!("no part may be read") };

    let mut huge = packed.manifest.clone();
    huge.size = MAX_MODULE_BYTES + 1;
    let error = unpack(&huge, never).expect_err("too big");
    assert!(error.to_string().contains("limit"), "{error}");

    let mut huge_stored = packed.manifest.clone();
    huge_stored.compressed_size = MAX_STORED_BYTES + 1;
    huge_stored.parts[0].size = MAX_STORED_BYTES + 1;
    assert_eq!(
        unpack(&huge_stored, never).expect_err("too big").reason(),
        "InvalidManifest"
    );
}

#[test]
fn bad_manifests_are_refused_with_reasons() {
    let good = pack(b"\0asm\x01\0\0\0", WASM_MEDIA_TYPE, 4).manifest;
    let never = |_: &str| -> Result<Vec<u8>, Error> { panic!("no part may be read") };
    let refused = |change: &dyn Fn(&mut ArtifactManifest)| {
        let mut m = good.clone();
        change(&mut m);
        unpack(&m, never).expect_err("refused")
    };

    let e = refused(&|m| m.api_version = "wasmfn.dev/v2".into());
    assert_eq!(e.reason(), "UnsupportedManifest");
    assert!(e.to_string().contains("wasmfn.dev/v2"), "{e}");
    assert_eq!(
        refused(&|m| m.kind = "Pod".into()).reason(),
        "UnsupportedManifest"
    );
    assert_eq!(
        refused(&|m| m.digest = "md5:abc".into()).reason(),
        "InvalidManifest"
    );
    assert_eq!(
        refused(&|m| m.digest = m.digest.to_uppercase().replace("SHA256", "sha256")).reason(),
        "InvalidManifest"
    );
    assert_eq!(refused(&|m| m.parts.clear()).reason(), "InvalidManifest");
    for name in [
        "../etc/passwd",
        "a/b",
        "..data",
        ".",
        "",
        MANIFEST_FILE,
        "x y",
    ] {
        let e = refused(&|m| m.parts[0].name = name.into());
        assert_eq!(e.reason(), "InvalidManifest", "{name:?}");
    }
    let e = refused(&|m| m.parts[1].name = m.parts[0].name.clone());
    assert!(e.to_string().contains("twice"), "{e}");
    let e = refused(&|m| m.compressed_size += 1);
    assert!(e.to_string().contains("add up"), "{e}");
    let e = refused(&|m| m.parts[0].digest = "sha256:00".into());
    assert!(e.to_string().contains("module.gz.000"), "{e}");
    let e = refused(&|m| {
        m.compression = Compression::None;
    });
    assert!(e.to_string().contains("compression is none"), "{e}");
}

#[test]
fn manifest_json_errors_distinguish_syntax_from_version() {
    let e = ArtifactManifest::from_json(b"{not json").expect_err("syntax");
    assert_eq!(e.reason(), "ManifestSyntax");
    let e = ArtifactManifest::from_json(
        br#"{"apiVersion":"wasmfn.dev/v1beta9","kind":"ArtifactManifest","future":"field"}"#,
    )
    .expect_err("version");
    assert_eq!(e.reason(), "UnsupportedManifest", "{e}");
    let mut value: serde_json::Value =
        serde_json::from_str(&pack(b"x", WASM_MEDIA_TYPE, 10).manifest.to_json()).expect("json");
    value["compression"] = "zstd".into();
    let e = ArtifactManifest::from_json(value.to_string().as_bytes()).expect_err("zstd");
    assert_eq!(e.reason(), "ManifestSyntax");
    assert!(e.to_string().contains("zstd"), "{e}");
}

#[test]
fn the_media_type_is_read_from_the_manifest_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let packed = pack(b"print('hi')\n", PYTHON_MEDIA_TYPE, 4096);
    packed.write_dir(dir.path()).expect("write");
    // Without its parts the artifact cannot be read, but its media type can.
    for part in &packed.manifest.parts {
        std::fs::remove_file(dir.path().join(&part.name)).expect("remove part");
    }
    assert!(read(dir.path()).is_err());
    assert_eq!(
        media_type(dir.path()).expect("media type"),
        PYTHON_MEDIA_TYPE
    );
    assert_eq!(
        media_type(&dir.path().join(MANIFEST_FILE)).expect("media type"),
        PYTHON_MEDIA_TYPE
    );
    assert!(is_script_media_type(PYTHON_MEDIA_TYPE) && is_script_media_type(JAVASCRIPT_MEDIA_TYPE));
    assert!(!is_script_media_type(WASM_MEDIA_TYPE));
    assert!(media_type(&dir.path().join("nothing-here")).is_err());
}

#[test]
fn reads_a_directory_or_its_manifest_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let module = module_like(&mut Rng(21), 40_000);
    let packed = pack(&module, WASM_MEDIA_TYPE, 4096);
    packed.write_dir(dir.path()).expect("write");

    assert!(is_packed(dir.path()));
    assert!(is_packed(&dir.path().join(MANIFEST_FILE)));
    assert!(!is_packed(&dir.path().join("module.gz.000")));
    assert!(!is_packed(&dir.path().join("nothing-here")));

    let (manifest, bytes) = read_dir(dir.path()).expect("read");
    assert_eq!(manifest, packed.manifest);
    assert_eq!(bytes, module);
    let (_, bytes) = read(&dir.path().join(MANIFEST_FILE)).expect("read via manifest file");
    assert_eq!(bytes, module);
    let (_, bytes) = read(dir.path()).expect("read via directory");
    assert_eq!(bytes, module);
}

#[test]
fn read_dir_reports_missing_manifest_missing_and_corrupt_parts() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(!is_packed(dir.path()));
    let error = read_dir(dir.path()).expect_err("empty dir");
    assert_eq!(error.reason(), "MissingManifest");
    assert!(error.to_string().contains(MANIFEST_FILE), "{error}");

    let module = Rng(22).bytes(10_000);
    let packed = pack(&module, WASM_MEDIA_TYPE, 3000);
    packed.write_dir(dir.path()).expect("write");

    let part = dir.path().join("module.gz.002");
    let original = std::fs::read(&part).expect("part");
    let mut corrupt = original.clone();
    corrupt[0] ^= 1;
    std::fs::write(&part, &corrupt).expect("corrupt");
    let error = read_dir(dir.path()).expect_err("corrupt part");
    assert_eq!(error.reason(), "PartDigest");
    assert!(error.to_string().contains("module.gz.002"), "{error}");

    std::fs::write(&part, [original.as_slice(), b"tail"].concat()).expect("grow");
    let error = read_dir(dir.path()).expect_err("long part");
    assert!(
        matches!(&error, Error::PartSize { name, actual, .. }
            if name == "module.gz.002" && *actual == original.len() as u64 + 4),
        "{error}"
    );

    std::fs::remove_file(&part).expect("remove");
    let error = read_dir(dir.path()).expect_err("missing part");
    assert_eq!(error.reason(), "MissingPart");
    assert!(error.to_string().contains("module.gz.002"), "{error}");

    std::fs::write(dir.path().join(MANIFEST_FILE), "{}").expect("blank manifest");
    assert_eq!(
        read_dir(dir.path()).expect_err("blank").reason(),
        "UnsupportedManifest"
    );
}

#[test]
fn read_dir_follows_symlinks_like_a_configmap_volume() {
    // The kubelet mounts ConfigMap keys as symlinks into a `..data` directory.
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("..2026_01_01_00_00_00.000000000");
    let module = Rng(23).bytes(5000);
    let packed = pack(&module, WASM_MEDIA_TYPE, 2048);
    packed.write_dir(&data).expect("write");
    std::os::unix::fs::symlink(data.file_name().expect("name"), dir.path().join("..data"))
        .expect("..data");
    let mut names: Vec<String> = packed.parts.iter().map(|(n, _)| n.clone()).collect();
    names.push(MANIFEST_FILE.into());
    for name in names {
        std::os::unix::fs::symlink(format!("..data/{name}"), dir.path().join(&name))
            .expect("key link");
    }
    assert!(is_packed(dir.path()));
    assert_eq!(read_dir(dir.path()).expect("read").1, module);
}

#[test]
fn error_reasons_are_fixed_names() {
    let errors = [
        Error::ManifestSyntax("x".into()),
        Error::InvalidManifest("x".into()),
        Error::Decompress("x".into()),
        Error::TooLarge { limit: 1 },
    ];
    for error in errors {
        assert!(error.reason().chars().all(|c| c.is_ascii_alphabetic()));
    }
}

/// Feeds `module` to a [`PackWriter`] in pieces of the sizes `split` gives, checking after every
/// piece that less than one part waits in memory; returns the manifest and all parts.
fn stream_pack(
    module: &[u8],
    part_bytes: usize,
    mut split: impl FnMut() -> usize,
) -> (ArtifactManifest, Vec<(String, Vec<u8>)>) {
    let mut writer = PackWriter::new(WASM_MEDIA_TYPE, part_bytes);
    let mut parts = Vec::new();
    let mut rest = module;
    while !rest.is_empty() {
        let (piece, tail) = rest.split_at(split().clamp(1, rest.len()));
        parts.extend(writer.write(piece));
        assert!(
            writer.buffered() < part_bytes.max(1),
            "{} bytes wait for a part of {part_bytes}",
            writer.buffered()
        );
        rest = tail;
    }
    assert_eq!(writer.size(), module.len() as u64);
    let (manifest, last) = writer.finish();
    parts.extend(last);
    (manifest, parts)
}

#[test]
fn a_module_packed_piece_by_piece_gives_the_same_manifest_and_parts_however_it_is_split() {
    let mut rng = Rng(0x5eed_0001);
    let module = module_like(&mut rng, 60_000);
    for part_bytes in [0, 1000, 4096, 1 << 20] {
        let whole = pack(&module, WASM_MEDIA_TYPE, part_bytes);
        let mut seed = Rng(part_bytes as u64 + 7);
        let splits: [&mut dyn FnMut() -> usize; 4] =
            [&mut || 1, &mut || 4093, &mut || usize::MAX, &mut || {
                seed.below(20_000) as usize + 1
            }];
        for split in splits {
            let (manifest, parts) = stream_pack(&module, part_bytes, split);
            assert_eq!(manifest, whole.manifest, "part_bytes {part_bytes}");
            assert_eq!(parts, whole.parts, "part_bytes {part_bytes}");
        }
    }
}

#[test]
fn an_incompressible_module_streams_through_in_full_parts_and_unpacks_bit_exact() {
    let module = Rng(0x5eed_0002).bytes(2_500_000);
    let (manifest, parts) = stream_pack(&module, DEFAULT_PART_BYTES, || 64 << 10);
    let whole = pack(&module, WASM_MEDIA_TYPE, DEFAULT_PART_BYTES);
    assert_eq!(manifest, whole.manifest);
    assert_eq!(parts.len(), 3, "2.5 MB of noise is three 900 KiB parts");
    assert!(parts[..2]
        .iter()
        .all(|(_, bytes)| bytes.len() == DEFAULT_PART_BYTES));
    let packed = Packed { manifest, parts };
    assert_eq!(packed.unpack().expect("unpack"), module);
}

#[test]
fn an_empty_module_streams_to_what_pack_gives() {
    let writer = PackWriter::new(WASM_MEDIA_TYPE, 100);
    let (manifest, parts) = writer.finish();
    let whole = pack(&[], WASM_MEDIA_TYPE, 100);
    assert_eq!(manifest, whole.manifest);
    assert_eq!(parts, whole.parts);
}
