/** @jsxImportSource hono/jsx */
import { Layout, Region } from '../components/layout.tsx';

/** What a job page shows of each output stream, read every second while the job runs: its last 256 KiB. */
const OUTPUT_TAIL_BYTES = 256 * 1024;

/**
 * `/ui/jobs/:id`: the job (refreshed every second until it ends), while it waits why (node by node, every
 * 5 s), and its output, read from the logs API (`/api/v1/jobs/:id/logs`) by the client script while it runs.
 */
export const JobPage = ({ id }: { id: number }) => (
  <Layout title={`Job ${id} · Conductor`}>
    <p>
      <a href="/">← All jobs</a>
    </p>
    <Region id="detail" src={`/api/v1/ui/fragments/jobs/${id}`} every={1000} />
    <Region id="explain" src={`/api/v1/ui/fragments/jobs/${id}/explain`} every={5000} />
    <section
      aria-labelledby="o-h"
      id="output"
      data-logs={`/api/v1/jobs/${id}/logs?tail=${OUTPUT_TAIL_BYTES}`}
    >
      <h2 id="o-h">Output</h2>
      <p>The last 256 KiB of each stream; all of it: conductor logs {id}.</p>
      <pre id="stdout" aria-live="polite" tabindex={0} />
      <h3>Errors (stderr)</h3>
      <pre id="stderr" tabindex={0} />
    </section>
  </Layout>
);
