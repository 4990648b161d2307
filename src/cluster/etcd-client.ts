import { ConsecutiveBreaker, circuitBreaker, handleWhen } from "cockatiel";
import { Etcd3, isRecoverableError } from "etcd3";
import type { EtcdAccess } from "../security/etcd-access.js";

/**
 * An etcd client tuned for leases of a few seconds. etcd3's default circuit breaker stays open
 * for 5 s after three failures: after an etcd restart every member would miss its keepalives for
 * longer than its lease TTL and be dropped from the cluster, though etcd itself was back at once.
 * Half-open after 300 ms instead. `access`: TLS credentials and user/password auth, if etcd wants them.
 */
export function connectEtcd(hosts: string[], access: EtcdAccess = {}): Etcd3 {
  return new Etcd3({
    hosts,
    dialTimeout: 3000,
    ...(access.credentials ? { credentials: access.credentials } : {}),
    ...(access.auth ? { auth: access.auth } : {}),
    faultHandling: {
      host: () =>
        circuitBreaker(handleWhen(isRecoverableError), {
          halfOpenAfter: 300,
          breaker: new ConsecutiveBreaker(3),
        }),
    },
  });
}
