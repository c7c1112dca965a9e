/**
 * The few Workers runtime (workerd) types the push channel uses, kept local: the project type-checks against
 * the Node types, which own the globals (`WebSocket` there is undici's). Only what is called is declared.
 */

/** workerd's WebSocket (server side of a WebSocketPair, or one handed back by the Hibernation API). */
export interface WorkerdWebSocket {
  readonly readyState: number;
  send(message: string): void;
  close(code?: number, reason?: string): void;
  serializeAttachment(value: unknown): void;
  deserializeAttachment(): unknown;
}

export interface DurableObjectStorage {
  get<T>(key: string): Promise<T | undefined>;
  put(key: string, value: unknown): Promise<void>;
  getAlarm(): Promise<number | null>;
  setAlarm(scheduledTime: number): Promise<void>;
  deleteAlarm(): Promise<void>;
}

export interface DurableObjectState {
  readonly storage: DurableObjectStorage;
  acceptWebSocket(ws: WorkerdWebSocket, tags?: string[]): void;
  getWebSockets(tag?: string): WorkerdWebSocket[];
  setWebSocketAutoResponse(pair?: unknown): void;
  getWebSocketAutoResponseTimestamp(ws: WorkerdWebSocket): Date | null;
  blockConcurrencyWhile<T>(callback: () => Promise<T>): Promise<T>;
  waitUntil(promise: Promise<unknown>): void;
}

export interface DurableObjectStub {
  fetch(input: string | Request, init?: RequestInit): Promise<Response>;
}

export interface DurableObjectId {
  toString(): string;
}

export interface DurableObjectNamespace {
  idFromName(name: string): DurableObjectId;
  get(id: DurableObjectId): DurableObjectStub;
}

/** workerd globals absent from the Node types. */
interface WorkerdGlobals {
  WebSocketPair: new () => { 0: WorkerdWebSocket; 1: WorkerdWebSocket };
  WebSocketRequestResponsePair: new (request: string, response: string) => unknown;
}

export const workerd = globalThis as unknown as WorkerdGlobals;

/** The 101 answer that hands `client` to the caller (workerd's `ResponseInit.webSocket`). */
export function upgradeResponse(client: WorkerdWebSocket): Response {
  return new Response(null, { status: 101, webSocket: client } as ResponseInit);
}
