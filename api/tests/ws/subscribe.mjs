// Subscribes to liveMetrics with the reference graphql-transport-ws client
// and prints each event as one JSON line; exits 0 after COUNT events, 1 on error.
//   TRACKINGBMS_TOKEN=… node subscribe.mjs ws://127.0.0.1:8080/graphql/ws COUNT [SCOPE_JSON]
// The token travels in the connection_init payload, as browsers must send it.
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const [url, count = '1', scope = 'null'] = process.argv.slice(2);
const token = process.env.TRACKINGBMS_TOKEN;
const client = createClient({ url, webSocketImpl: WebSocket, retryAttempts: 0, lazy: false,
  connectionParams: token ? { Authorization: `Bearer ${token}` } : {},
  on: { connected: () => console.log(JSON.stringify({ connected: true })) } });
let seen = 0;
const query = `subscription($scope: LiveScope) {
  liveMetrics(scope: $scope) { batteryId replayed missed sample { ts socPct voltageV } } }`;
client.subscribe({ query, variables: { scope: JSON.parse(scope) } }, {
  next: (msg) => {
    console.log(JSON.stringify(msg));
    if (++seen >= Number(count)) { client.dispose(); process.exit(0); }
  },
  error: (err) => {
    // A refused connection arrives as a CloseEvent (code 4403 Forbidden).
    const info = err && err.code ? { code: err.code, reason: err.reason } : { message: String(err) };
    console.error(JSON.stringify({ error: info }));
    process.exit(1);
  },
  complete: () => process.exit(seen >= Number(count) ? 0 : 1),
});
setTimeout(() => { console.error('timeout'); process.exit(2); }, 30000);
