//! The gRPC codec of the `Resources` service: prost, with small initial buffers.
//!
//! tonic's default keeps an 8 KiB encode buffer for the life of every response stream; a
//! server holding 10,000 Watch streams then holds 80 MB of mostly empty buffers. Buffers here
//! start at [`CODEC_BUFFER_BYTES`] and grow as a message needs (a large List response still
//! encodes in one piece).

use std::marker::PhantomData;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Initial encode/decode buffer per call or stream.
pub const CODEC_BUFFER_BYTES: usize = 1024;
/// Encoded bytes after which a streaming encoder yields to send (tonic's default).
pub const CODEC_YIELD_THRESHOLD_BYTES: usize = 32 * 1024;

/// A prost codec with [`CODEC_BUFFER_BYTES`] initial buffers.
#[derive(Debug, Clone, Copy)]
pub struct CompactCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for CompactCodec<T, U> {
    fn default() -> Self {
        CompactCodec(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(CODEC_BUFFER_BYTES, CODEC_YIELD_THRESHOLD_BYTES)
}

impl<T, U> Codec for CompactCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(settings())
    }
}
