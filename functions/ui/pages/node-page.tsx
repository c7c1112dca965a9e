/** @jsxImportSource hono/jsx */
import { Layout, Region } from '../components/layout.tsx';

/** `/ui/nodes/:id`: one node's resources, running jobs and recent history. */
export const NodePage = ({ id }: { id: string }) => (
  <Layout title={`Node ${id} · Conductor`} current="nodes">
    <Region id="node" src={`/api/v1/ui/fragments/nodes/${encodeURIComponent(id)}`} every={3000} />
  </Layout>
);
