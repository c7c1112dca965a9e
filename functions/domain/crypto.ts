/**
 * Hashing, random tokens and HMAC over Web Crypto (`globalThis.crypto`): the same code on Node 20 and on
 * Workers. HMACs are compared in constant time (`crypto.subtle.verify`, or `equalBytes`).
 */
const encoder = new TextEncoder();

/** Web Crypto's CryptoKey (named through the API: the Node types own the globals). */
export type HmacKey = Awaited<ReturnType<typeof crypto.subtle.importKey>>;

export function toBytes(data: string | Uint8Array): Uint8Array<ArrayBuffer> {
  return typeof data === 'string' ? encoder.encode(data) : new Uint8Array(data);
}

export function toHex(bytes: ArrayBuffer | Uint8Array): string {
  const view = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let out = '';
  for (const b of view) out += b.toString(16).padStart(2, '0');
  return out;
}

/** Bytes of a hex string, or undefined when it is not one (odd length, other characters). */
export function fromHex(hex: string): Uint8Array<ArrayBuffer> | undefined {
  if (hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) return undefined;
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

export async function sha256Hex(data: string | Uint8Array): Promise<string> {
  return toHex(await crypto.subtle.digest('SHA-256', toBytes(data)));
}

export function base64url(bytes: Uint8Array): string {
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replaceAll('+', '-').replaceAll('/', '_').replace(/=+$/, '');
}

/** `<prefix>` + 32 random bytes, base64url (43 characters): 256 bits, never guessable. */
export function randomSecret(prefix: string): string {
  return prefix + base64url(crypto.getRandomValues(new Uint8Array(32)));
}

export function hmacKey(secret: string): Promise<HmacKey> {
  return crypto.subtle.importKey('raw', toBytes(secret), { name: 'HMAC', hash: 'SHA-256' }, false, [
    'sign',
    'verify',
  ]);
}

export async function hmacSha256Hex(secret: string, data: string | Uint8Array): Promise<string> {
  return toHex(await crypto.subtle.sign('HMAC', await hmacKey(secret), toBytes(data)));
}

/** The HMAC-SHA256 of `data` under `key`. */
export async function hmacSha256(key: HmacKey, data: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.sign('HMAC', key, toBytes(data)));
}

/** True when `a` and `b` hold the same bytes; the time taken depends on their length only, not where they differ. */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let difference = 0;
  for (let i = 0; i < a.length; i++) difference |= (a[i] ?? 0) ^ (b[i] ?? 0);
  return difference === 0;
}

/** True when `signatureHex` is the HMAC-SHA256 of `data` under `key`, compared in constant time. */
export async function hmacVerify(key: HmacKey, signatureHex: string, data: Uint8Array): Promise<boolean> {
  const signature = fromHex(signatureHex);
  if (signature?.length !== 32) return false;
  return crypto.subtle.verify('HMAC', key, signature, toBytes(data));
}

export function concatBytes(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
