//! Finding native code a module carries inside itself.
//!
//! WasmEdge accepts "universal" Wasm files: an ordinary module plus a custom section named
//! `wasmedge` holding machine code that `wasmedge compile` produced. When its loader finds that
//! section (and the interpreter is not forced) it runs the machine code instead of the module's
//! Wasm functions, and nothing ties the two together. Whoever wrote the bytes would choose the
//! instructions the runner executes, so wasmfn refuses such modules wherever user bytes enter:
//! the operator before it stores a module, the execution core before it loads one. Native code
//! runs only from AOT files a runner compiled itself from verified bytes.
//!
//! The scan walks section headers only (id, size, and for custom sections the name), so it
//! costs a few nanoseconds per section whatever the module's size. A module whose section
//! layout does not parse is reported as malformed rather than passed on: the loader might read
//! the same bytes differently, and a section hidden from this scan must not reach it.

/// The custom section name under which WasmEdge stores native code.
pub const NATIVE_CODE_SECTION: &str = "wasmedge";

/// The fixed reason callers report for a refused module.
pub const NATIVE_CODE_REASON: &str = "NativeCodeSection";

/// What a scan found wrong with a module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NativeCodeError {
    /// The module embeds native code.
    #[error(
        "the module carries a custom section named \"wasmedge\" ({size} bytes at offset {offset}): \
         WasmEdge would run the native code in it instead of the module's WebAssembly. Provide \
         the module as it was before `wasmedge compile` (or remove that section); wasmfn compiles \
         native code itself from the verified module"
    )]
    Found {
        /// Byte offset of the section's id byte.
        offset: usize,
        /// Size of the section's contents.
        size: usize,
    },
    /// The section layout does not parse, so the scan cannot vouch for the module.
    #[error("the module's sections do not parse at byte {offset}: {what}")]
    Malformed {
        /// Where parsing stopped.
        offset: usize,
        /// What was wrong.
        what: &'static str,
    },
}

/// The 8-byte preamble: magic and version (modules use version 1; the scan reads any version's
/// section framing, which components share).
const PREAMBLE_BYTES: usize = 8;
const CUSTOM_SECTION_ID: u8 = 0;

/// Checks that `module` carries no `wasmedge` section and that its section framing parses.
/// `module` must start with the Wasm magic (callers check that first, with their own message).
pub fn check_no_native_code(module: &[u8]) -> Result<(), NativeCodeError> {
    if module.len() < PREAMBLE_BYTES || !module.starts_with(b"\0asm") {
        return Err(NativeCodeError::Malformed {
            offset: 0,
            what: "no WebAssembly preamble",
        });
    }
    let mut offset = PREAMBLE_BYTES;
    while offset < module.len() {
        let section_start = offset;
        let id = module[offset];
        offset += 1;
        let size = read_u32(module, &mut offset)? as usize;
        let contents_end = offset
            .checked_add(size)
            .filter(|end| *end <= module.len())
            .ok_or(NativeCodeError::Malformed {
                offset: section_start,
                what: "a section runs past the end of the module",
            })?;
        if id == CUSTOM_SECTION_ID {
            let mut name_offset = offset;
            let name_len = read_u32(&module[..contents_end], &mut name_offset)? as usize;
            let name = name_offset
                .checked_add(name_len)
                .filter(|end| *end <= contents_end)
                .map(|end| &module[name_offset..end])
                .ok_or(NativeCodeError::Malformed {
                    offset: section_start,
                    what: "a custom section's name runs past the section",
                })?;
            if name == NATIVE_CODE_SECTION.as_bytes() {
                return Err(NativeCodeError::Found {
                    offset: section_start,
                    size,
                });
            }
        }
        offset = contents_end;
    }
    Ok(())
}

/// Reads an unsigned LEB128 `u32` (at most 5 bytes, no bits beyond 32) at `offset` in `bytes`.
fn read_u32(bytes: &[u8], offset: &mut usize) -> Result<u32, NativeCodeError> {
    let start = *offset;
    let mut value: u64 = 0;
    for shift in (0..35).step_by(7) {
        let Some(&byte) = bytes.get(*offset) else {
            return Err(NativeCodeError::Malformed {
                offset: start,
                what: "a size runs past the end of the module",
            });
        };
        *offset += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return u32::try_from(value).map_err(|_| NativeCodeError::Malformed {
                offset: start,
                what: "a size does not fit in 32 bits",
            });
        }
    }
    Err(NativeCodeError::Malformed {
        offset: start,
        what: "a size is longer than 5 bytes",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREAMBLE: &[u8] = b"\0asm\x01\0\0\0";

    fn custom(name: &str, payload: &[u8]) -> Vec<u8> {
        let mut contents = vec![name.len() as u8];
        contents.extend_from_slice(name.as_bytes());
        contents.extend_from_slice(payload);
        let mut section = vec![0, contents.len() as u8];
        section.extend(contents);
        section
    }

    fn module(sections: &[Vec<u8>]) -> Vec<u8> {
        let mut bytes = PREAMBLE.to_vec();
        for section in sections {
            bytes.extend_from_slice(section);
        }
        bytes
    }

    // A type section with one `() -> ()` type.
    fn type_section() -> Vec<u8> {
        vec![1, 4, 1, 0x60, 0, 0]
    }

    #[test]
    fn a_module_with_ordinary_sections_and_other_custom_sections_passes() {
        let bytes = module(&[
            type_section(),
            custom("name", b"\0\x01x"),
            custom("producers", b"\0"),
            custom("wasmedge-like", b"xx"),
            custom("wasmedg", b""),
        ]);
        assert_eq!(check_no_native_code(&bytes), Ok(()));
        assert_eq!(check_no_native_code(PREAMBLE), Ok(()));
    }

    #[test]
    fn a_wasmedge_section_anywhere_is_found_with_its_place() {
        let last = module(&[type_section(), custom("wasmedge", b"\x7fELF")]);
        assert_eq!(
            check_no_native_code(&last),
            Err(NativeCodeError::Found {
                offset: PREAMBLE.len() + type_section().len(),
                size: 13,
            })
        );
        let first = module(&[custom("wasmedge", b""), type_section()]);
        assert!(matches!(
            check_no_native_code(&first),
            Err(NativeCodeError::Found { offset: 8, .. })
        ));
    }

    #[test]
    fn a_multi_byte_size_is_read_as_leb128() {
        // A 200-byte custom section: its size takes two LEB128 bytes (0xc8 0x01).
        let payload = vec![0u8; 200 - 1 - "wasmedge".len()];
        let mut contents = vec!["wasmedge".len() as u8];
        contents.extend_from_slice(b"wasmedge");
        contents.extend_from_slice(&payload);
        let mut bytes = PREAMBLE.to_vec();
        bytes.extend_from_slice(&[0, 0xc8, 0x01]);
        bytes.extend(contents);
        assert_eq!(
            check_no_native_code(&bytes),
            Err(NativeCodeError::Found {
                offset: 8,
                size: 200
            })
        );
        // Padded (redundant) LEB128 bytes are still valid encodings and must not hide it.
        let mut padded = PREAMBLE.to_vec();
        padded.extend_from_slice(&[0, 0x89, 0x80, 0x80, 0x80, 0x00, 8]);
        padded.extend_from_slice(b"wasmedge");
        assert!(matches!(
            check_no_native_code(&padded),
            Err(NativeCodeError::Found { size: 9, .. })
        ));
    }

    #[test]
    fn framing_that_does_not_parse_is_malformed_not_accepted() {
        let cases: [(&[u8], &str); 5] = [
            (b"\0asm\x01\0", "no WebAssembly preamble"),
            (
                b"\0asm\x01\0\0\0\x01\x05\x01",
                "a section runs past the end",
            ),
            (b"\0asm\x01\0\0\0\x01\x80", "a size runs past the end"),
            (
                b"\0asm\x01\0\0\0\x00\x80\x80\x80\x80\x80\x00",
                "longer than 5 bytes",
            ),
            (
                b"\0asm\x01\0\0\0\x00\x02\x05a",
                "name runs past the section",
            ),
        ];
        for (bytes, expected) in cases {
            match check_no_native_code(bytes) {
                Err(NativeCodeError::Malformed { what, .. }) => {
                    assert!(what.contains(expected), "{what:?} for {bytes:?}")
                }
                other => panic!("{bytes:?}: {other:?}"),
            }
        }
        let too_big = b"\0asm\x01\0\0\0\x00\xff\xff\xff\xff\x7f";
        assert!(matches!(
            check_no_native_code(too_big),
            Err(NativeCodeError::Malformed {
                what: "a size does not fit in 32 bits",
                ..
            })
        ));
    }
}
