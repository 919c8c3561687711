// A producer in another language, for tests/test_interop_node.py: publishes with Google's
// Node.js Pub/Sub client, knowing nothing of Celery but docs/wire-format.md.
//
// stdin: {"project": ID, "messages": [
//   {"kind": "plain", "topic": TOPIC_ID, "data": TEXT, "attributes": {...}},
//   {"kind": "task", "topic": TOPIC_ID, "task": NAME, "args": [...], "kwargs": {...},
//    "exchange": E, "routing_key": R}]}
// stdout: one JSON array, per message {"message_id": ..., "task_id": ... (tasks only)}.
// The emulator is used when PUBSUB_EMULATOR_HOST is set (the client reads it).
// With "opentelemetry": true in stdin, the client's own OpenTelemetry support is on (with the
// SDK, spans kept in memory): it writes each message's trace context into its attributes
// (googclient_traceparent), and stdout is {"results": [...], "spans": [...]}.
'use strict';

const crypto = require('node:crypto');
const {PubSub} = require('@google-cloud/pubsub');

// A Celery task (message protocol 2) laid out as docs/wire-format.md says.
function celeryTask({task, args = [], kwargs = {}, exchange, routing_key: routingKey}) {
  const id = crypto.randomUUID();
  const envelope = {
    body: JSON.stringify([args, kwargs, {callbacks: null, errbacks: null, chain: null, chord: null}]),
    'content-type': 'application/json',
    'content-encoding': 'utf-8',
    headers: {
      lang: 'py', task, id, root_id: id, parent_id: null, group: null, retries: 0,
      eta: null, expires: null, origin: 'node-interop-test',
    },
    properties: {
      correlation_id: id, delivery_mode: 2, priority: 0, body_encoding: null,
      delivery_info: {exchange, routing_key: routingKey},
    },
  };
  return {
    id,
    message: {
      data: Buffer.from(JSON.stringify(envelope), 'utf8'),
      attributes: {'kombu-envelope': '1', exchange, routing_key: routingKey, task, task_id: id},
    },
  };
}

// The OpenTelemetry SDK, its finished spans kept in memory and listed by spans().
function startTracing() {
  const {
    BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor,
  } = require('@opentelemetry/sdk-trace-base');
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({spanProcessors: [new SimpleSpanProcessor(exporter)]});
  provider.register();
  return {
    spans: () => exporter.getFinishedSpans().map((span) => ({
      name: span.name, trace_id: span.spanContext().traceId, span_id: span.spanContext().spanId,
      parent_id: span.parentSpanId || null, attributes: span.attributes,
    })),
  };
}

async function main() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  const request = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  const tracing = request.opentelemetry ? startTracing() : null;
  const pubsub = new PubSub({projectId: request.project, enableOpenTelemetryTracing: !!tracing});
  const results = [];
  try {
    for (const spec of request.messages) {
      const topic = pubsub.topic(spec.topic);
      if (spec.kind === 'task') {
        const {id, message} = celeryTask(spec);
        results.push({message_id: await topic.publishMessage(message), task_id: id});
      } else if (spec.kind === 'plain') {
        const message = {data: Buffer.from(spec.data, 'utf8'), attributes: spec.attributes || {}};
        results.push({message_id: await topic.publishMessage(message)});
      } else {
        throw new Error(`unknown kind ${JSON.stringify(spec.kind)}`);
      }
    }
  } finally {
    await pubsub.close();
  }
  const output = tracing ? {results, spans: tracing.spans()} : results;
  process.stdout.write(JSON.stringify(output) + '\n');
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(1);
});
