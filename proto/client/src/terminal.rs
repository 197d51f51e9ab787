//! A `pty` terminal's socket (`GET /ws/terminal/{id}`): its output from an
//! offset, in order and byte-exact, then its end; input, resize and
//! acknowledgements the other way.

use crate::{Client, ClientError, Result};
use bosun_proto::{TerminalClientFrame, TerminalExit, TerminalHello, TerminalServerFrame};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use reqwest::Url;
use tokio_tungstenite::tungstenite::{self, Message};

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What the terminal sends after its hello.
#[derive(Debug, Clone, PartialEq)]
pub enum TerminalEvent {
    /// Bytes of its output from `offset`.
    Output { offset: u64, bytes: Vec<u8> },
    /// It ended; every byte before `end` came before this.
    Exit(TerminalExit),
    /// OSC 52 sequences for this client's own clipboard, sent through the
    /// API (`POST /api/v1/terminals/clipboard` with the binding): not part
    /// of the output, for a terminal to interpret (`bosun term attach`
    /// writes them to its own).
    Clipboard(Vec<u8>),
    /// The socket closed without an end (the daemon went away).
    Closed,
}

pub struct TerminalStream {
    pub hello: TerminalHello,
    reader: TerminalReader,
    writer: TerminalWriter,
}

pub struct TerminalReader {
    stream: SplitStream<Socket>,
}

pub struct TerminalWriter {
    sink: SplitSink<Socket, Message>,
}

fn transport(context: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError::Transport { context: context.to_string(), message: e.to_string() }
}

impl TerminalStream {
    pub(crate) async fn connect(client: &Client, url: Url) -> Result<TerminalStream> {
        let mut shown = url.clone();
        shown.set_query(None);
        // Nagle off: a keystroke or an ack is one small frame, and with
        // Nagle on it waits for the ACK of the frame before it (the peer's
        // delayed ACK, some 40 ms) whenever one is still unacknowledged.
        let connected = tokio_tungstenite::connect_async_with_config(url.as_str(), None, true).await;
        let (socket, _) = connected.map_err(|e| match e {
            tungstenite::Error::Io(io) => client.unreachable(&io.to_string()),
            tungstenite::Error::Http(response) => ClientError::WebSocketRefused {
                base: client.base().to_string(),
                url: shown.to_string(),
                status: response.status().as_u16(),
            },
            other => transport(&format!("opening {shown}"), other),
        })?;
        let (sink, stream) = socket.split();
        let mut reader = TerminalReader { stream };
        let hello = match reader.frame().await? {
            Some(TerminalServerFrame::Hello(hello)) => hello,
            other => return Err(transport(&format!("opening {shown}"), format!("expected a hello, got {other:?}"))),
        };
        Ok(TerminalStream { hello, reader, writer: TerminalWriter { sink } })
    }

    pub async fn next(&mut self) -> Result<TerminalEvent> {
        self.reader.next().await
    }

    pub fn writer(&mut self) -> &mut TerminalWriter {
        &mut self.writer
    }

    /// Reading and writing apart, for a client that does both at once.
    pub fn split(self) -> (TerminalHello, TerminalReader, TerminalWriter) {
        (self.hello, self.reader, self.writer)
    }
}

impl TerminalReader {
    async fn frame(&mut self) -> Result<Option<TerminalServerFrame>> {
        loop {
            match self.stream.next().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(transport("reading the terminal", e)),
                Some(Ok(Message::Binary(bytes))) => {
                    return TerminalServerFrame::decode(&bytes)
                        .map(Some)
                        .map_err(|e| transport("reading the terminal", e))
                }
                Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Ok(_)) => continue,
            }
        }
    }

    pub async fn next(&mut self) -> Result<TerminalEvent> {
        match self.frame().await? {
            Some(TerminalServerFrame::Output { offset, bytes }) => Ok(TerminalEvent::Output { offset, bytes }),
            Some(TerminalServerFrame::Exit(exit)) => Ok(TerminalEvent::Exit(exit)),
            Some(TerminalServerFrame::Clipboard(sequences)) => Ok(TerminalEvent::Clipboard(sequences)),
            Some(TerminalServerFrame::Hello(_)) => Err(transport("reading the terminal", "a second hello")),
            None => Ok(TerminalEvent::Closed),
        }
    }
}

impl TerminalWriter {
    async fn send(&mut self, frame: TerminalClientFrame) -> Result<()> {
        self.sink.send(Message::binary(frame.encode())).await.map_err(|e| transport("writing to the terminal", e))
    }

    /// Input, in pieces the daemon takes (a big paste is cut up).
    pub async fn input(&mut self, bytes: &[u8]) -> Result<()> {
        for piece in bytes.chunks(16 * 1024) {
            self.send(TerminalClientFrame::Input(piece.to_vec())).await?;
        }
        Ok(())
    }

    pub async fn resize(&mut self, cols: u16, rows: u16) -> Result<()> {
        self.send(TerminalClientFrame::Resize { cols, rows }).await
    }

    /// Everything before `offset` is rendered: the terminal may go on.
    pub async fn ack(&mut self, offset: u64) -> Result<()> {
        self.send(TerminalClientFrame::Ack(offset)).await
    }

    pub async fn close(&mut self) {
        let _ = self.sink.close().await;
    }
}
