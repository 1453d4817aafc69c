//! Payload compression: zstd (the current Datadog Agent's default), gzip or deflate (zlib).

use std::io::Write;

use crate::sinks::datadog::config::Compression;

impl Compression {
    /// The `Content-Encoding` value.
    pub fn encoding(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
            Compression::Deflate => "deflate",
        }
    }

    /// Compresses `data`.
    ///
    /// # Errors
    /// Only on allocation-level failures inside the codec.
    pub fn compress(self, data: &[u8]) -> std::io::Result<Vec<u8>> {
        match self {
            // Level 1, as the Agent's zstd serializer.
            Compression::Zstd => zstd::bulk::compress(data, 1),
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
                e.write_all(data)?;
                e.finish()
            }
            Compression::Deflate => {
                let mut e =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
                e.write_all(data)?;
                e.finish()
            }
        }
    }
}
