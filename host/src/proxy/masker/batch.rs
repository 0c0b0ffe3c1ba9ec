//! Rows held for `custom` masks: their values go to the masking plugins one call per column
//! and plugin, and the rows out in order once transformed.

use super::*;

impl Masker {
    /// Sends held rows, with their `custom` columns transformed in one call per column and
    /// plugin.
    pub(super) async fn flush<W: AsyncWrite + Unpin>(&mut self, client: &mut FrameWriter<W>) {
        if self.batch.is_empty() {
            return;
        }
        let rows = std::mem::take(&mut self.batch);
        let Some(plan) = self.current.clone() else {
            return;
        };
        let set = self.set();
        let mut transformed: HashMap<usize, Vec<Option<String>>> = HashMap::new();
        for (index, action) in plan.actions.iter().enumerate() {
            let Action::Custom(plugins) = action else {
                continue;
            };
            if !plan.textual(index) {
                continue;
            }
            let mut values: Vec<Option<String>> = rows
                .iter()
                .map(|row| {
                    masking::data_row_values(&row[5..])
                        .and_then(|v| v.get(index).copied().flatten())
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                })
                .collect();
            let column = wit::Column {
                name: plan.fields[index].name.clone(),
                source: None,
                derived_from: Vec::new(),
                type_oid: plan.fields[index].type_oid,
                format: wit::ValueFormat::Text,
            };
            let mut ok = true;
            for &plugin_index in plugins {
                let Some(plugin) = set.maskers.get(plugin_index) else {
                    ok = false;
                    break;
                };
                match self
                    .maskers
                    .transform(plugin, &self.info, &column, &values)
                    .await
                {
                    Ok(out) => values = out,
                    Err(failure) => {
                        tracing::warn!(plugin = %plugin.name, %failure, "custom mask failed; values withheld");
                        client.queue(&messages::warning(format!(
                            "sluice: values of column \"{}\" withheld: masking plugin \"{}\" failed: {failure}",
                            column.name, plugin.name
                        )));
                        ok = false;
                        break;
                    }
                }
            }
            // Withheld (None) when any plugin of the chain failed.
            transformed.insert(index, if ok { values } else { vec![None; rows.len()] });
        }
        for (row_index, row) in rows.iter().enumerate() {
            let custom = |column: usize| -> Option<Option<String>> {
                transformed
                    .get(&column)
                    .map(|values| values.get(row_index).cloned().flatten())
            };
            let key = &self.hash_key;
            client.queue_with(|out| plan.apply_into(row, key, Some(&custom), out));
        }
    }
}
