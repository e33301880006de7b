// A real OpenID provider for the token tests: oidc-provider, issuing JWT access
// tokens to OAuth 2.0 client-credentials clients for one resource server (the
// consent-service audience).
//
// Reads its clients from the OIDC_TEST_CONFIG environment variable:
//   {"audience": "...", "clients": [{"client_id", "client_secret", "scope",
//     "org", "rpps"?}]}
// listens on a free port of 127.0.0.1 and prints one line, `issuer <url>`,
// once it answers. Signing keys are generated at start (RS256). Stops on
// SIGTERM or when its standard input closes (its parent test ended).
import { generateKeyPairSync } from 'node:crypto';
import http from 'node:http';
import Provider from 'oidc-provider';

const config = JSON.parse(process.env.OIDC_TEST_CONFIG);
const byClient = new Map(config.clients.map((client) => [client.client_id, client]));
const allScopes = [...new Set(config.clients.flatMap((client) => client.scope.split(' ')))];

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'provider-rs256', alg: 'RS256', use: 'sig' };

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: config.clients.map((client) => ({
      client_id: client.client_id,
      client_secret: client.client_secret,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      scope: client.scope,
    })),
    jwks: { keys: [signingKey] },
    scopes: allScopes,
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => config.audience,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, resource) => {
          if (resource !== config.audience) {
            throw new Error(`unknown resource ${resource}`);
          }
          return {
            audience: config.audience,
            scope: allScopes.join(' '),
            accessTokenFormat: 'jwt',
            accessTokenTTL: 300,
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    // The organization (and a practitioner's RPPS number) the client stands for.
    extraTokenClaims: (_ctx, token) => {
      const client = byClient.get(token.clientId);
      return client.rpps ? { org: client.org, rpps: client.rpps } : { org: client.org };
    },
  });
  server.on('request', provider.callback());
  process.stdout.write(`issuer ${issuer}\n`);
});

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.stdin.on('end', stop);
process.stdin.resume();
