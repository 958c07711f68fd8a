// A real OpenID provider for the single sign-on tests: npm `oidc-provider`
// (certified), with its development login/consent pages.
//   node provider.mjs PORT REDIRECT_URI
// Prints one JSON line {"ready":true,"issuer":…} once it listens.
//
// Accounts (any password): ana (group bms-admins), tom (bms-techs),
// eve (marketing, no role). Clients: `trackingbms` (the server under test)
// and `other-app` (to mint tokens for the wrong audience).
//
// GET /test/mint?sub=&aud=&nonce=&exp_in= returns an ID token signed with
// the provider's own key, so the tests can present expired tokens and tokens
// for another audience that are otherwise genuine.
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';
import { SignJWT, importJWK } from 'jose';

const [port, redirectUri] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'test-key', use: 'sig', alg: 'RS256' };

const accounts = {
  ana: { email: 'ana@example.com', email_verified: true, name: 'Ana Admin', groups: ['bms-admins'] },
  tom: { email: 'tom@example.com', email_verified: true, name: 'Tom Tech', groups: ['bms-techs'] },
  eve: { email: 'eve@example.com', email_verified: true, name: 'Eve Else', groups: ['marketing'] },
};

const provider = new Provider(issuer, {
  clients: [
    { client_id: 'trackingbms', client_secret: 'trackingbms-secret', redirect_uris: [redirectUri],
      grant_types: ['authorization_code'], response_types: ['code'] },
    { client_id: 'other-app', client_secret: 'other-secret', redirect_uris: ['http://127.0.0.1:1/cb'],
      grant_types: ['authorization_code'], response_types: ['code'] },
  ],
  jwks: { keys: [jwk] },
  pkce: { required: () => true },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] },
  // Put the requested claims in the ID token itself.
  conformIdTokenClaims: false,
  findAccount: async (ctx, sub) => (accounts[sub]
    ? { accountId: sub, claims: async () => ({ sub, ...accounts[sub] }) }
    : undefined),
  features: { devInteractions: { enabled: true } },
});

const key = await importJWK(jwk, 'RS256');
provider.use(async (ctx, next) => {
  if (ctx.path !== '/test/mint') return next();
  const q = ctx.query;
  const now = Math.floor(Date.now() / 1000);
  const exp = now + Number(q.exp_in ?? 600);
  ctx.body = await new SignJWT({ nonce: q.nonce, ...(accounts[q.sub] ?? {}) })
    .setProtectedHeader({ alg: 'RS256', kid: 'test-key' })
    .setIssuer(issuer).setSubject(q.sub ?? 'ana').setAudience(q.aud ?? 'trackingbms')
    .setIssuedAt(Math.min(now, exp - 60)).setExpirationTime(exp)
    .sign(key);
});

provider.listen(Number(port), '127.0.0.1', () => {
  console.log(JSON.stringify({ ready: true, issuer }));
});
