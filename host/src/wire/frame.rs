//! Framing of protocol messages: `tag, i32 length, body`, kept as the bytes that arrived so that
//! messages the gateway does not change are forwarded without re-encoding.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// One whole protocol message as it came off the wire.
#[derive(Debug, Clone)]
pub struct Frame {
    raw: Bytes,
}

impl Frame {
    /// The message type byte.
    pub fn tag(&self) -> u8 {
        self.raw[0]
    }

    /// The message without tag and length.
    pub fn body(&self) -> &[u8] {
        &self.raw[5..]
    }

    /// The whole message, tag and length included.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("message of type {tag:?} declares length {len}, outside 4..={max}")]
    BadLength { tag: char, len: usize, max: usize },
    #[error("connection closed in the middle of a message")]
    Truncated,
    #[error("unexpected message type {0:?}")]
    UnexpectedType(char),
}

const READ_CHUNK: usize = 64 * 1024;

/// Reads frames from a byte stream. `next` is cancel-safe: bytes read before a cancellation
/// stay buffered for the next call.
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    max_len: usize,
    /// Message types this peer may send, checked on the type byte alone: an unknown type is
    /// refused at once instead of after waiting for the length it claims (Postgres does the
    /// same), so a stray StartupMessage or SSLRequest cannot stall the session.
    known_type: Option<fn(u8) -> bool>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, max_len: usize) -> FrameReader<R> {
        FrameReader::with_buffer(inner, BytesMut::new(), max_len)
    }

    /// Continues reading after bytes already taken off the stream (e.g. during startup).
    pub fn with_buffer(inner: R, buf: BytesMut, max_len: usize) -> FrameReader<R> {
        FrameReader {
            inner,
            buf,
            max_len,
            known_type: None,
        }
    }

    /// Refuses any message whose type byte `known` rejects, as soon as that byte arrives.
    pub fn accepting(mut self, known: fn(u8) -> bool) -> FrameReader<R> {
        self.known_type = Some(known);
        self
    }

    /// The next whole frame already buffered, without reading.
    pub fn try_next(&mut self) -> Result<Option<Frame>, FrameError> {
        if let (Some(&tag), Some(known)) = (self.buf.first(), self.known_type)
            && !known(tag)
        {
            return Err(FrameError::UnexpectedType(tag as char));
        }
        let Some(len) = self.declared_len(0)? else {
            return Ok(None);
        };
        if self.buf.len() < len + 1 {
            // Grow towards the declared length, but only as bytes actually arrive: a length
            // field alone must not make the gateway allocate a large buffer.
            let missing = len + 1 - self.buf.len();
            self.buf.reserve(missing.min(16 * READ_CHUNK));
            return Ok(None);
        }
        Ok(Some(Frame {
            raw: self.buf.split_to(len + 1).freeze(),
        }))
    }

    /// The length field of the message starting at `at` in the buffer, once its header is
    /// there; refused outside `4..=max_len`.
    fn declared_len(&self, at: usize) -> Result<Option<usize>, FrameError> {
        let Some(header) = self.buf.get(at..at + 5) else {
            return Ok(None);
        };
        let len = (&header[1..]).get_u32() as usize;
        if !(4..=self.max_len).contains(&len) {
            return Err(FrameError::BadLength {
                tag: header[0] as char,
                len,
                max: self.max_len,
            });
        }
        Ok(Some(len))
    }

    /// The whole messages of type `tag` at the head of the buffer, as one slice handed to
    /// `take`, then consumed: the row path of a large result, without a frame per message. Stops
    /// at any other message, an incomplete one, or one whose length `try_next` would refuse (left
    /// for it to report). Returns how many bytes were taken.
    pub fn take_run(&mut self, tag: u8, take: impl FnOnce(&[u8])) -> usize {
        let mut end = 0;
        while self.buf.get(end) == Some(&tag)
            && let Ok(Some(len)) = self.declared_len(end)
            && self.buf.len() >= end + 1 + len
        {
            end += 1 + len;
        }
        if end > 0 {
            take(&self.buf[..end]);
            self.buf.advance(end);
        }
        end
    }

    /// The next frame, reading as needed; `None` on a clean end of stream.
    pub async fn next(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            if let Some(frame) = self.try_next()? {
                return Ok(Some(frame));
            }
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(READ_CHUNK);
            }
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
        }
    }

    /// For while the consumer is not taking frames (a statement held for approval): buffers
    /// whatever the peer sends, up to `limit` bytes, and returns once the peer has left — closed
    /// the connection, or sent Terminate at a message boundary. Cancel-safe; the buffered
    /// messages are still returned by `next` afterwards, in order.
    pub async fn departed(&mut self, limit: usize) -> bool {
        loop {
            if self.terminate_buffered() {
                return true;
            }
            if self.buf.len() >= limit {
                std::future::pending::<()>().await;
            }
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(READ_CHUNK);
            }
            match self.inner.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    }

    fn terminate_buffered(&self) -> bool {
        let mut at = 0;
        while at + 5 <= self.buf.len() {
            if self.buf[at] == b'X' {
                return true;
            }
            let len = (&self.buf[at + 1..at + 5]).get_u32() as usize;
            if len < 4 {
                return false;
            }
            at += 1 + len;
        }
        false
    }

    /// The underlying stream, e.g. to write on it while reading login replies.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    pub fn into_parts(self) -> (R, BytesMut) {
        (self.inner, self.buf)
    }
}

/// The messages of a run taken by [`FrameReader::take_run`], one slice each (tag and length
/// included).
pub fn messages_of(run: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = run;
    std::iter::from_fn(move || {
        let head = rest.get(1..5)?;
        let len = 1 + u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let (message, tail) = rest.split_at(len.min(rest.len()));
        rest = tail;
        Some(message)
    })
}

/// Collects outgoing messages and writes them in one go. `torn` tells whether a write was
/// cancelled halfway, after which nothing more may be written on this stream: the peer would
/// read garbage.
pub struct FrameWriter<W> {
    inner: W,
    pending: BytesMut,
    torn: bool,
    /// Reports writes the peer leaves waiting (the client leg only).
    stall: Option<super::stall::StallWatch>,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(inner: W) -> FrameWriter<W> {
        FrameWriter {
            inner,
            pending: BytesMut::with_capacity(READ_CHUNK),
            torn: false,
            stall: None,
        }
    }

    /// Reports flushes that wait on the peer longer than `watch` allows.
    pub fn watching(mut self, watch: Option<super::stall::StallWatch>) -> FrameWriter<W> {
        self.stall = watch;
        self
    }

    /// Queues bytes holding whole messages.
    pub fn queue(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// Queues one whole message written in place by `write` (no buffer of its own per message).
    pub fn queue_with(&mut self, write: impl FnOnce(&mut BytesMut)) {
        write(&mut self.pending);
    }

    /// Large buffers are flushed early so that memory stays bounded while a big result streams.
    pub fn wants_flush(&self) -> bool {
        self.pending.len() >= READ_CHUNK
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.torn = true;
        // `flush` as well as `write_all`: a TLS stream holds encrypted records until flushed.
        let write = async {
            self.inner.write_all(&self.pending).await?;
            self.inner.flush().await
        };
        match &self.stall {
            Some(watch) => watch.watch(write, self.pending.len()).await?,
            None => write.await?,
        }
        self.torn = false;
        self.pending.clear();
        Ok(())
    }

    /// Everything queued was written and no write was torn: the stream is between messages.
    pub fn is_settled(&self) -> bool {
        !self.torn && self.pending.is_empty()
    }

    pub fn into_inner(self) -> W {
        self.inner
    }

    /// Sends a last message if the stream is still in a state to receive one, then shuts down.
    pub async fn close_with(&mut self, last: Option<&[u8]>) {
        if self.torn {
            return;
        }
        self.pending.clear();
        if let Some(bytes) = last {
            self.queue(bytes);
        }
        let _ = self.flush().await;
        let _ = self.inner.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_split_across_reads_are_reassembled() {
        let (mut tx, rx) = tokio::io::duplex(16);
        let mut reader = FrameReader::new(rx, 1 << 20);
        let writer = tokio::spawn(async move {
            let mut msg = vec![b'Q', 0, 0, 0, 0];
            msg.extend_from_slice(b"select 1 -- padded to cross reads\0");
            let len = (msg.len() - 1) as u32;
            msg[1..5].copy_from_slice(&len.to_be_bytes());
            tx.write_all(&msg).await.unwrap();
            tx.write_all(&msg).await.unwrap();
        });
        for _ in 0..2 {
            let frame = reader.next().await.unwrap().unwrap();
            assert_eq!(frame.tag(), b'Q');
            assert!(frame.body().starts_with(b"select 1"));
        }
        writer.await.unwrap();
        assert!(reader.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_run_takes_whole_messages_of_one_type_and_leaves_the_rest() {
        let (mut tx, rx) = tokio::io::duplex(1024);
        let row = |value: &[u8]| {
            let mut msg = vec![b'D', 0, 0, 0, 0];
            msg.extend_from_slice(value);
            let len = (msg.len() - 1) as u32;
            msg[1..5].copy_from_slice(&len.to_be_bytes());
            msg
        };
        let mut bytes = [row(b"one"), row(b"two"), row(b"three")].concat();
        bytes.extend_from_slice(&[b'C', 0, 0, 0, 9, b'S', b'E', b'L', b'E', 0]);
        bytes.extend_from_slice(&row(b"after")[..6]);
        tx.write_all(&bytes).await.unwrap();
        let mut reader = FrameReader::new(rx, 1 << 20);
        let first = reader.next().await.unwrap().unwrap();
        assert_eq!(first.body(), b"one");
        let mut taken = Vec::new();
        let len = reader.take_run(b'D', |run| {
            taken = messages_of(run).map(<[u8]>::to_vec).collect();
        });
        assert_eq!(taken, vec![row(b"two"), row(b"three")]);
        assert_eq!(len, taken.iter().map(Vec::len).sum::<usize>());
        assert_eq!(
            reader.take_run(b'D', |_| panic!("a CommandComplete is no row")),
            0
        );
        assert_eq!(reader.next().await.unwrap().unwrap().tag(), b'C');
        // A row not yet whole stays for the frame path.
        assert_eq!(reader.take_run(b'D', |_| panic!("incomplete row taken")), 0);
    }

    #[tokio::test]
    async fn oversized_length_is_refused_before_buffering() {
        let (mut tx, rx) = tokio::io::duplex(64);
        tx.write_all(&[b'Q', 0x7f, 0xff, 0xff, 0xff]).await.unwrap();
        let mut reader = FrameReader::new(rx, 1 << 20);
        assert!(matches!(
            reader.next().await,
            Err(FrameError::BadLength { .. })
        ));
    }

    #[tokio::test]
    async fn eof_inside_a_message_is_truncation() {
        let (mut tx, rx) = tokio::io::duplex(64);
        tx.write_all(&[b'Q', 0, 0, 0, 9, b's']).await.unwrap();
        drop(tx);
        let mut reader = FrameReader::new(rx, 1 << 20);
        assert!(matches!(reader.next().await, Err(FrameError::Truncated)));
    }
}
