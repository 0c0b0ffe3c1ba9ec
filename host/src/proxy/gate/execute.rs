//! Execute, Describe and Close: nothing to judge (the statement or portal was judged at its
//! Parse or Bind), but each is announced to the pipeline with what audit and masking need of
//! its answer, and an Execute whose rows nothing describes yet gets a Describe of its portal
//! first.

use super::*;

impl Gate {
    /// An Execute from the client.
    pub(super) fn execute<W: AsyncWrite + Unpin>(
        &mut self,
        frame: &Frame,
        out: &mut FrameWriter<W>,
    ) {
        let auditing = self.trail.enabled();
        let portal = cstr(frame.body()).0.unwrap_or("");
        if self.copy_portals.contains(portal) {
            self.copy_pending = Some(self.cycles);
        }
        self.opaque.executed(portal);
        self.names.executed(portal);
        let record = auditing.then(|| self.trail.execution(portal)).flatten();
        let portal = pg_name(portal);
        let masking = self.tracker.as_mut().and_then(|t| t.execute(portal));
        let plan = match masking {
            Some(execution) => {
                if let Some(source) = execution.describe_first {
                    // Its rows are described by nothing yet: a Describe of the portal
                    // goes first, answered to the gateway only.
                    let mut describe = bytes::BytesMut::new();
                    postgres_protocol::message::frontend::describe(b'P', portal, &mut describe)
                        .expect("portal names from the client are NUL-free");
                    let request = Request::Describe(pipeline::Describe {
                        target: Target::Portal(portal.to_owned()),
                        injected: true,
                        record: record.map(|r| r.statement),
                        source: Some(source),
                    });
                    self.send(out, &describe, request);
                }
                Some(execution.plan)
            }
            None => None,
        };
        let execute = pipeline::Execute {
            portal: portal.to_owned(),
            record,
            plan,
        };
        self.send(out, frame.raw(), Request::Execute(execute));
    }

    /// A Describe from the client; an error is a malformed message.
    pub(super) fn describe<W: AsyncWrite + Unpin>(
        &mut self,
        frame: &Frame,
        out: &mut FrameWriter<W>,
    ) -> Result<(), String> {
        let auditing = self.trail.enabled();
        let target = Target::of(frame.body()).ok_or("malformed Describe message")?;
        let record = match (&target, auditing) {
            (Target::Portal(portal), true) => self.trail.execution(portal).map(|r| r.statement),
            _ => None,
        };
        let source = self.tracker.as_mut().and_then(|t| t.describe(&target));
        let describe = pipeline::Describe {
            target,
            injected: false,
            record,
            source,
        };
        self.send(out, frame.raw(), Request::Describe(describe));
        Ok(())
    }

    /// A Close from the client; an error is a malformed message.
    pub(super) fn close<W: AsyncWrite + Unpin>(
        &mut self,
        frame: &Frame,
        out: &mut FrameWriter<W>,
    ) -> Result<(), String> {
        let target = Target::of(frame.body()).ok_or("malformed Close message")?;
        if let Target::Statement(name) = &target {
            // Forgotten once Postgres has answered the cycle without an error.
            self.named.closed(name, self.cycles);
            self.progress.forgets_pending.store(true, Ordering::Release);
        }
        if let Some(tracker) = &mut self.tracker {
            tracker.close(&target);
        }
        self.send(out, frame.raw(), Request::Close(target));
        Ok(())
    }
}
