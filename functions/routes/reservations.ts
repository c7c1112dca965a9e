import { OpenAPIHono } from '@hono/zod-openapi';
import type { Context } from '../domain/context.ts';
import {
  createReservation,
  createReservationInput,
  deleteReservation,
  getReservation,
  listReservations,
  reservationNameParam,
  updateReservation,
  updateReservationInput,
} from '../domain/reservations.ts';
import type { AppEnv } from '../http/auth.ts';
import { reservationListSchema, reservationSchema } from '../http/responses.ts';
import { mount, type RouteSpec } from '../http/route.ts';

/** Advanced reservations (scontrol create/update/delete/show reservation): anyone who reads jobs sees them. */
export function reservationRoutes(ctx: Context) {
  const app = new OpenAPIHono<AppEnv>();
  mount(app, listReservationsRoute, async (c) => c.json({ reservations: await listReservations(ctx.db) }));
  mount(app, getReservationRoute, async (c, { params }) => c.json(await getReservation(ctx.db, params.name)));
  mount(app, createReservationRoute, async (c, { body }) =>
    c.json(await createReservation(ctx, await body(), c.get('principal')), 201),
  );
  mount(app, updateReservationRoute, async (c, { params, body }) =>
    c.json(await updateReservation(ctx, params.name, await body(), c.get('principal'))),
  );
  mount(app, deleteReservationRoute, async (c, { params }) =>
    c.json(await deleteReservation(ctx, params.name, c.get('principal'))),
  );
  return app;
}

const listReservationsRoute = {
  method: 'get',
  path: '/',
  operationId: 'listReservations',
  summary: 'List the reservations that are not over, the next to start first',
  tag: 'cluster',
  access: 'jobs:read',
  responses: { 200: { description: 'Reservations', schema: reservationListSchema } },
} satisfies RouteSpec<undefined, undefined, undefined>;

const getReservationRoute = {
  method: 'get',
  path: '/{name}',
  operationId: 'getReservation',
  summary: 'One reservation',
  tag: 'cluster',
  access: 'jobs:read',
  params: reservationNameParam,
  responses: { 200: { description: 'The reservation', schema: reservationSchema } },
  refusals: { 404: 'No reservation of that name (reservation_not_found)' },
} satisfies RouteSpec<typeof reservationNameParam, undefined, undefined>;

const createReservationRoute = {
  method: 'post',
  path: '/',
  operationId: 'createReservation',
  summary: 'Reserve nodes over a time window (scontrol create reservation)',
  description:
    'Slurm’s reservation: start_time (now, now+<n>[minutes|hours|days], or a date and time), end_time or duration (minutes or a Slurm time), nodes (a hostlist, or ALL) or node_count (of partition, idle nodes first), users and/or accounts (a job must match each that is set), flags MAINT, DAILY, WEEKLY. Only jobs submitted with reservation=<name> that match it start on its nodes inside its windows; no other job starts there whose time limit would run into one (reason ReqNodeNotAvail, or ReqNodeNotAvail, Reserved for maintenance with MAINT).',
  tag: 'admin',
  access: 'admin',
  body: createReservationInput,
  bodyExample: {
    name: 'maint',
    start_time: '2026-12-08T06:00:00Z',
    duration: '2:00:00',
    nodes: 'node[01-04]',
    users: ['root'],
    flags: ['MAINT'],
  },
  responses: { 201: { description: 'The reservation', schema: reservationSchema } },
  refusals: {
    400: 'A bad time, window, node list or count, or no users and no accounts (invalid_reservation)',
    409: 'A reservation of that name exists (reservation_exists)',
  },
} satisfies RouteSpec<undefined, undefined, typeof createReservationInput>;

const updateReservationRoute = {
  method: 'patch',
  path: '/{name}',
  operationId: 'updateReservation',
  summary: 'Change a reservation (scontrol update reservation): the fields given',
  tag: 'admin',
  access: 'admin',
  params: reservationNameParam,
  body: updateReservationInput,
  bodyExample: { duration: 180 },
  responses: { 200: { description: 'The reservation after the change', schema: reservationSchema } },
  refusals: {
    400: 'As for creating one (invalid_reservation)',
    404: 'No reservation of that name (reservation_not_found)',
  },
} satisfies RouteSpec<typeof reservationNameParam, undefined, typeof updateReservationInput>;

const deleteReservationRoute = {
  method: 'delete',
  path: '/{name}',
  operationId: 'deleteReservation',
  summary: 'Delete a reservation; jobs that name it wait (reason Reservation) until changed or cancelled',
  tag: 'admin',
  access: 'admin',
  params: reservationNameParam,
  responses: { 200: { description: 'The deleted reservation', schema: reservationSchema } },
  refusals: { 404: 'No reservation of that name (reservation_not_found)' },
} satisfies RouteSpec<typeof reservationNameParam, undefined, undefined>;
