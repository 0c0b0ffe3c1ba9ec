//! Reads the catalog for the masking cache on a connection of its own: the gateway's upstream
//! role, `application_name` `sluice:catalog`, one simple query, then Terminate. Never a
//! client's session, so no client's transaction or protocol state is touched.

use std::sync::Arc;

use bytes::BytesMut;

use super::{CATALOG_QUERY, CatalogFunction, CatalogRow, CatalogRows};
use crate::masking::data_row_values;
use crate::upstream::Upstream;
use crate::wire::frame::{FrameReader, FrameWriter};

pub async fn read_catalog(
    upstream: Arc<Upstream>,
    max_message: usize,
) -> Result<CatalogRows, String> {
    let target = upstream.target();
    let params = vec![
        ("user".to_owned(), target.user.clone()),
        ("database".to_owned(), target.database.clone()),
        ("application_name".to_owned(), "sluice:catalog".to_owned()),
    ];
    let session = upstream
        .login(&params, max_message)
        .await
        .map_err(|e| e.to_string())?;
    let (read, write) = tokio::io::split(session.stream);
    let mut reader = FrameReader::with_buffer(read, session.buffered, max_message);
    let mut writer = FrameWriter::new(write);
    let mut query = BytesMut::new();
    postgres_protocol::message::frontend::query(CATALOG_QUERY, &mut query)
        .map_err(|e| e.to_string())?;
    writer.queue(&query);
    writer.flush().await.map_err(|e| e.to_string())?;
    let mut rows = CatalogRows::default();
    // Result sets seen (RowDescriptions): the relations', then the functions'.
    let mut sets = 0;
    let mut failure = None;
    loop {
        let frame = match reader.next().await {
            Ok(Some(frame)) => frame,
            Ok(None) => return Err("the upstream closed the catalog connection".into()),
            Err(e) => return Err(e.to_string()),
        };
        match frame.tag() {
            b'T' => sets += 1,
            b'D' if sets == 1 => rows
                .relations
                .push(catalog_row(frame.body()).ok_or("malformed catalog row")?),
            b'D' => rows
                .functions
                .push(function_row(frame.body()).ok_or("malformed catalog row")?),
            b'E' => failure = Some(crate::wire::backend::error_summary(frame.body())),
            b'Z' => break,
            _ => {}
        }
    }
    writer.queue(&crate::wire::backend::terminate());
    let _ = writer.flush().await;
    match failure {
        Some(e) => Err(e),
        None => Ok(rows),
    }
}

fn function_row(body: &[u8]) -> Option<CatalogFunction> {
    let text = texts(body)?;
    Some(CatalogFunction {
        schema: text(0)?,
        name: text(1)?,
        volatile: text(2)? == "t",
    })
}

fn catalog_row(body: &[u8]) -> Option<CatalogRow> {
    let text = texts(body)?;
    Some(CatalogRow {
        oid: text(0)?.parse().ok()?,
        schema: text(1)?,
        table: text(2)?,
        kind: text(3)?.chars().next()?,
        attnum: text(4)?.parse().ok()?,
        column: text(5)?,
        view_definition: text(6),
    })
}

/// The values of a DataRow as text, by column (`None` for NULL or a column past the end); `None`
/// for a malformed row.
fn texts(body: &[u8]) -> Option<impl Fn(usize) -> Option<String>> {
    let values: Vec<Option<String>> = data_row_values(body)?
        .into_iter()
        .map(|v| v.map(|v| String::from_utf8_lossy(v).into_owned()))
        .collect();
    Some(move |i: usize| values.get(i).cloned().flatten())
}
