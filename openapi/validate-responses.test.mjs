// Tests of validate-responses.mjs against the real openapi.yaml.
// Run: node --test validate-responses.test.mjs

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createValidator, loadSpec, validateJsonl } from './validate-responses.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const script = path.join(here, 'validate-responses.mjs');
const spec = loadSpec();
const validator = createValidator(spec);

const sandbox = {
    id: 'sb-0123456789abcdefghij',
    state: 'running',
    created_at: '2026-11-28T04:30:00.123Z',
    expires_at: '2026-11-28T04:40:00.123Z',
    labels: { project: 'demo' },
    env: {},
    user: '',
    template: null,
    egress: {
        allow: [],
        deny: [],
        allow_private: [],
        limits: { max_connections: 16, max_bytes: 104857600, idle_timeout_ms: 30000, total_timeout_ms: 300000 },
    },
};

function exchange(fields) {
    return { method: 'GET', path: '/v1/sandboxes/sb-123', status: 200, content_type: 'application/json', body: sandbox, ...fields };
}

function errorBody(code) {
    return { error: { code, message: 'm', request_id: 'req-1' } };
}

// Runs the CLI on the given lines; returns {status, stdout, stderr}.
function runCli(lines) {
    const dir = mkdtempSync(path.join(tmpdir(), 'validate-responses-'));
    try {
        const file = path.join(dir, 'exchanges.jsonl');
        writeFileSync(file, lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') + '\n');
        return spawnSync(process.execPath, [script, file], { encoding: 'utf8' });
    } finally {
        rmSync(dir, { recursive: true, force: true });
    }
}

test('a matching exchange has no problems', () => {
    assert.deepEqual(validator.validateExchange(exchange({})), []);
});

test('a wrong type in a body is reported with its location', () => {
    const problems = validator.validateExchange(exchange({ body: { ...sandbox, labels: { a: 1 } } }));
    assert.equal(problems.length, 1);
    assert.match(problems[0], /^\/labels\/a must be string/);
});

test('a missing field, an unknown field and a bad enum value are all reported', () => {
    const { created_at: _unused, ...withoutCreated } = sandbox;
    const problems = validator.validateExchange(exchange({ body: { ...withoutCreated, state: 'zombie', extra: true } }));
    assert.ok(problems.some((p) => p.includes("required property 'created_at'")), problems.join('\n'));
    assert.ok(problems.some((p) => p.includes('"extra"')), problems.join('\n'));
    assert.ok(problems.some((p) => p.startsWith('/state must be equal to one of the allowed values')), problems.join('\n'));
});

test('a time without milliseconds is rejected', () => {
    const problems = validator.validateExchange(exchange({ body: { ...sandbox, created_at: '2026-11-28T04:30:00Z' } }));
    assert.ok(problems.some((p) => p.startsWith('/created_at must match pattern')), problems.join('\n'));
});

test('broken_reason is only allowed on a broken sandbox', () => {
    const broken = { ...sandbox, state: 'broken', broken_reason: 'VMM exited' };
    assert.deepEqual(validator.validateExchange(exchange({ body: broken })), []);
    const problems = validator.validateExchange(exchange({ body: { ...broken, state: 'running' } }));
    assert.equal(problems.length, 1);
    assert.match(problems[0], /^\/state must be equal to constant: "broken"/);
});

test('an undeclared status is a mismatch', () => {
    const problems = validator.validateExchange(exchange({ status: 418, body: errorBody('internal') }));
    assert.equal(problems.length, 1);
    assert.match(problems[0], /status 418 is not declared for GET \/v1\/sandboxes\/\{id\}/);
});

test('an error response validates against the shared Error schema', () => {
    assert.deepEqual(validator.validateExchange(exchange({ status: 404, body: errorBody('expired') })), []);
    const problems = validator.validateExchange(exchange({ status: 404, body: errorBody('gone') }));
    assert.ok(problems.some((p) => p.startsWith('/error/code must be equal to one of the allowed values')), problems.join('\n'));
});

test('an unknown path is a mismatch', () => {
    const problems = validator.validateExchange(exchange({ path: '/v1/sandbox', status: 404, body: errorBody('not_found') }));
    assert.deepEqual(problems, ['path /v1/sandbox matches no path of the spec']);
});

test('an undeclared method on a known path is a mismatch', () => {
    const problems = validator.validateExchange(exchange({ method: 'PATCH' }));
    assert.equal(problems.length, 1);
    assert.match(problems[0], /method PATCH is not declared for \/v1\/sandboxes\/\{id\} \(declared: GET, DELETE\)/);
});

test('concrete paths win over templates and query strings are ignored', () => {
    const listing = { path: '/', entries: [{ name: 'etc', type: 'directory', size: 4096, mode: '0755' }], truncated: false };
    assert.deepEqual(
        validator.validateExchange(exchange({ path: '/v1/sandboxes/sb-1/files/list?path=%2F', body: listing })),
        [],
    );
});

test('an undeclared content type is a mismatch, a declared one with parameters is fine', () => {
    const problems = validator.validateExchange(exchange({ content_type: 'text/html' }));
    assert.equal(problems.length, 1);
    assert.match(problems[0], /content type text\/html is not declared/);
    assert.deepEqual(validator.validateExchange(exchange({ content_type: 'application/json; charset=utf-8' })), []);
});

test('non-JSON bodies are not validated but their content type is', () => {
    const metrics = { path: '/metrics', content_type: 'text/plain; version=0.0.4', body: null };
    assert.deepEqual(validator.validateExchange(exchange(metrics)), []);
    const file = { path: '/v1/sandboxes/sb-1/files?path=/etc/hostname', content_type: 'application/octet-stream', body: null };
    assert.deepEqual(validator.validateExchange(exchange(file)), []);
    assert.equal(validator.validateExchange(exchange({ ...file, content_type: 'text/plain' })).length, 1);
});

test('a 204 must have no content type and no body', () => {
    const deleted = { method: 'DELETE', status: 204, content_type: null, body: null };
    assert.deepEqual(validator.validateExchange(exchange(deleted)), []);
    const problems = validator.validateExchange(exchange({ ...deleted, content_type: 'application/json', body: {} }));
    assert.equal(problems.length, 2);
});

test('NDJSON lines validate against the stream line schema', () => {
    const stream = { method: 'POST', path: '/v1/sandboxes/sb-1/exec?stream=true', content_type: 'application/x-ndjson' };
    const good = [
        { type: 'started', pid: 42 },
        { type: 'stdout', data: 'aGk=', encoding: 'base64' },
        { type: 'stderr', data: 'oops\n', encoding: 'utf-8' },
        {
            type: 'exit',
            exit_code: null,
            signal: 9,
            timed_out: true,
            cancelled: false,
            stdout_truncated: false,
            stderr_truncated: false,
            duration_ms: 1000.5,
        },
        { type: 'error', error: { code: 'vm_broken', message: 'VM exited', request_id: 'req-1' } },
    ];
    for (const body of good) assert.deepEqual(validator.validateExchange(exchange({ ...stream, body })), [], JSON.stringify(body));

    // The discriminator picks the branch, so only that branch's problems show.
    const badExit = validator.validateExchange(exchange({ ...stream, body: { type: 'exit', exit_code: 0 } }));
    assert.ok(badExit.length > 0);
    assert.ok(badExit.every((p) => p.includes('ExecExitEvent')), badExit.join('\n'));
    assert.deepEqual(validator.validateExchange(exchange({ ...stream, body: { type: 'stdin', data: '' } })), [
        '/type must be one of ["started","stdout","stderr","exit","error"], got "stdin"',
    ]);
    const badChunk = validator.validateExchange(exchange({ ...stream, body: { type: 'stdout', data: 'x', encoding: 'latin1' } }));
    assert.ok(badChunk.some((p) => p.startsWith('/encoding must be equal to one of the allowed values')), badChunk.join('\n'));
});

test('the buffered exec result is checked too', () => {
    const result = {
        exit_code: 0,
        signal: null,
        timed_out: false,
        cancelled: false,
        stdout: 'hi\n',
        stdout_encoding: 'utf-8',
        stderr: '',
        stderr_encoding: 'utf-8',
        stdout_truncated: false,
        stderr_truncated: false,
        duration_ms: 3,
    };
    const call = { method: 'POST', path: '/v1/sandboxes/sb-1/exec' };
    assert.deepEqual(validator.validateExchange(exchange({ ...call, body: result })), []);
    const problems = validator.validateExchange(exchange({ ...call, body: { ...result, exit_code: '0' } }));
    assert.ok(problems.some((p) => p.startsWith('/exit_code must be integer,null')), problems.join('\n'));
});

test('headers, when recorded, are checked against the declared response headers', () => {
    const unavailable = { path: '/readyz', status: 503, body: errorBody('unavailable') };
    assert.deepEqual(
        validator.validateExchange(exchange({ ...unavailable, headers: { 'x-request-id': 'req-1', 'retry-after': '1' } })),
        [],
    );
    assert.deepEqual(validator.validateExchange(exchange({ ...unavailable, headers: { 'X-Request-Id': 'req-1' } })), [
        'required response header Retry-After is missing',
    ]);
    const badId = validator.validateExchange(exchange({ headers: { 'X-Request-Id': 'has space' } }));
    assert.equal(badId.length, 1);
    assert.match(badId[0], /^header X-Request-Id: .*must match pattern/);
    // Without "headers" nothing about headers is checked.
    assert.deepEqual(validator.validateExchange(exchange(unavailable)), []);
});

test('malformed exchanges are mismatches, not crashes', () => {
    assert.deepEqual(validator.validateExchange([]), ['an exchange must be a JSON object']);
    assert.ok(validator.validateExchange({ method: 'GET', path: 'x', status: 'ok' }).length >= 2);
    const { count, mismatches } = validateJsonl('{"method": \n\n', validator, 'f');
    assert.equal(count, 1);
    assert.equal(mismatches[0].line, 1);
    assert.match(mismatches[0].problems[0], /^not valid JSON/);
});

test('every response example in the spec validates against its own schema', () => {
    let checked = 0;
    const deref = (node) => (node?.$ref ? node.$ref.slice(2).split('/').reduce((n, k) => n[k], spec) : node);
    for (const [template, item] of Object.entries(spec.paths)) {
        const concrete = template.replace(/\{[^}]+\}/g, 'sb-0123456789abcdefghij');
        for (const [method, operation] of Object.entries(item)) {
            if (method === 'parameters') continue;
            for (const [status, rawResponse] of Object.entries(operation.responses)) {
                const response = deref(rawResponse);
                for (const [mediaType, media] of Object.entries(response.content ?? {})) {
                    const examples = [
                        ...(media.example === undefined ? [] : [media.example]),
                        ...Object.values(media.examples ?? {}).map((e) => e.value),
                    ];
                    if (mediaType !== 'application/json' && mediaType !== 'application/x-ndjson') continue;
                    for (const body of examples) {
                        const ex = { method: method.toUpperCase(), path: concrete, status: Number(status), content_type: mediaType, body };
                        assert.deepEqual(validator.validateExchange(ex), [], `${method} ${template} ${status}`);
                        checked += 1;
                    }
                }
            }
        }
    }
    assert.ok(checked >= 20, `only ${checked} examples checked`);
});

test('CLI: exits 0 when every exchange matches', () => {
    const result = runCli([exchange({}), exchange({ path: '/healthz', body: { status: 'ok' } })]);
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stdout, /2 exchange\(s\) checked.*0 mismatch/);
});

test('CLI: exits 1 and prints line, method, path, status and errors of each mismatch', () => {
    const result = runCli([exchange({}), '', exchange({ status: 418 }), exchange({ path: '/nope' })]);
    assert.equal(result.status, 1);
    assert.match(result.stderr, /:3: GET \/v1\/sandboxes\/sb-123 -> 418\n {4}status 418 is not declared/);
    assert.match(result.stderr, /:4: GET \/nope -> 200\n {4}path \/nope matches no path of the spec/);
    assert.doesNotMatch(result.stderr, /:1:/);
});

test('CLI: an empty recording fails and a missing file is a usage error', () => {
    assert.equal(runCli(['']).status, 1);
    assert.equal(spawnSync(process.execPath, [script, '/nonexistent/x.jsonl']).status, 2);
    assert.equal(spawnSync(process.execPath, [script]).status, 2);
});
