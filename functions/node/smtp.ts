/**
 * A small SMTP client for job mail (RFC 5321 over plain TCP: EHLO, AUTH PLAIN when the URL has a user, MAIL,
 * RCPT, DATA, QUIT). One connection per mail; no STARTTLS: point it at a local relay (an MTA on the host or a
 * sidecar), which is how Slurm's MailProg is usually set up too.
 */
import net from 'node:net';
import { hostname } from 'node:os';
import type { Mailer, OutgoingMail } from '../domain/notifications.ts';

const TIMEOUT_MS = 15_000;

export function createSmtpMailer(url: string, from?: string): Mailer {
  const target = new URL(url);
  const port = Number(target.port || 25);
  const host = target.hostname.replace(/^\[|\]$/g, '');
  const sender = from ?? `conductor@${hostname()}`;
  const user = decodeURIComponent(target.username);
  const password = decodeURIComponent(target.password);
  return {
    async send(mail: OutgoingMail) {
      if (/[\r\n<>]/.test(mail.to) || /[\r\n]/.test(mail.subject)) throw new Error('bad mail header');
      const session = await SmtpSession.open(host, port);
      try {
        await session.expect(220);
        await session.command(`EHLO ${hostname()}`, 250);
        if (user) {
          const plain = Buffer.from(`\0${user}\0${password}`).toString('base64');
          await session.command(`AUTH PLAIN ${plain}`, 235);
        }
        await session.command(`MAIL FROM:<${sender}>`, 250);
        await session.command(`RCPT TO:<${mail.to}>`, [250, 251]);
        await session.command('DATA', 354);
        const body = [
          `From: ${sender}`,
          `To: ${mail.to}`,
          `Subject: ${mail.subject}`,
          `Date: ${new Date().toUTCString()}`,
          'MIME-Version: 1.0',
          'Content-Type: text/plain; charset=utf-8',
          'Content-Transfer-Encoding: 8bit',
          '',
          ...mail.text.replace(/\r?\n/g, '\n').split('\n'),
        ]
          .map((line) => (line.startsWith('.') ? `.${line}` : line))
          .join('\r\n');
        await session.command(`${body}\r\n.`, 250);
        await session.command('QUIT', 221).catch(() => {});
      } finally {
        session.close();
      }
    },
  };
}

class SmtpSession {
  private buffer = '';
  private waiting: ((line: string | Error) => void) | undefined;
  private readonly lines: string[] = [];
  private failure: Error | undefined;

  private constructor(private readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.setTimeout(TIMEOUT_MS, () => this.fail(new Error('SMTP server timed out')));
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      let end = this.buffer.indexOf('\r\n');
      while (end >= 0) {
        this.lines.push(this.buffer.slice(0, end));
        this.buffer = this.buffer.slice(end + 2);
        end = this.buffer.indexOf('\r\n');
      }
      this.wake();
    });
    socket.on('error', (error) => this.fail(error));
    socket.on('close', () => this.fail(new Error('SMTP connection closed')));
  }

  static open(host: string, port: number): Promise<SmtpSession> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host, port }, () => {
        socket.off('error', reject);
        resolve(new SmtpSession(socket));
      });
      socket.once('error', reject);
      socket.setTimeout(TIMEOUT_MS, () => socket.destroy(new Error('SMTP connect timed out')));
    });
  }

  private fail(error: Error) {
    this.failure ??= error;
    this.wake();
  }

  private wake() {
    const waiter = this.waiting;
    if (!waiter) return;
    const line = this.lines.shift();
    if (line !== undefined) {
      this.waiting = undefined;
      waiter(line);
    } else if (this.failure) {
      this.waiting = undefined;
      waiter(this.failure);
    }
  }

  private nextLine(): Promise<string> {
    return new Promise((resolve, reject) => {
      this.waiting = (line) => (line instanceof Error ? reject(line) : resolve(line));
      this.wake();
    });
  }

  /** Reads one (possibly multi-line) reply and checks its code. */
  async expect(codes: number | number[]): Promise<string> {
    const wanted = Array.isArray(codes) ? codes : [codes];
    let line = await this.nextLine();
    const all = [line];
    while (line[3] === '-') {
      line = await this.nextLine();
      all.push(line);
    }
    const code = Number(line.slice(0, 3));
    if (!wanted.includes(code)) throw new Error(`SMTP: ${all.join(' | ').slice(0, 300)}`);
    return all.join('\n');
  }

  async command(text: string, codes: number | number[]): Promise<string> {
    this.socket.write(`${text}\r\n`);
    return this.expect(codes);
  }

  close() {
    this.socket.destroy();
  }
}
