import { readFileSync } from "node:fs";
import tls from "node:tls";

/**
 * The serial number (upper-case hex) of the certificate a TLS server at `address` (host:port)
 * presents in a fresh handshake, verified against `files.ca`; a client certificate is offered
 * when given (a server requiring one would refuse the handshake otherwise).
 */
export function peerSerial(
  address: string,
  files: { ca: string; cert?: string; key?: string },
  serverName = "localhost",
): Promise<string> {
  const i = address.lastIndexOf(":");
  const host = address.slice(0, i);
  const port = Number(address.slice(i + 1));
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host,
      port,
      servername: serverName,
      ca: readFileSync(files.ca),
      cert: files.cert !== undefined ? readFileSync(files.cert) : undefined,
      key: files.key !== undefined ? readFileSync(files.key) : undefined,
      ALPNProtocols: ["h2"],
    });
    socket.once("secureConnect", () => {
      const serial = socket.getPeerCertificate().serialNumber;
      socket.destroy();
      resolve(serial.toUpperCase());
    });
    socket.once("error", reject);
  });
}
