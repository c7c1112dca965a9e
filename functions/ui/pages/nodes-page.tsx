/** @jsxImportSource hono/jsx */
import { Layout, Region } from '../components/layout.tsx';

/** `/ui/nodes`: every live worker and those down within the hour, a page at a time (`?after=<id>`). */
export const NodesPage = ({ query }: { query: URLSearchParams }) => (
  <Layout title="Nodes · Conductor" current="nodes">
    <h1>Nodes</h1>
    <section aria-label="Workers">
      <Region id="workers" src={`/api/v1/ui/fragments/nodes?${query}`} every={3000} />
    </section>
  </Layout>
);
