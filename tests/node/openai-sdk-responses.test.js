// The OpenAI Node SDK's Responses API (`client.responses`), used the way its README and the OpenAI docs
// show it, against the gateway: create, streaming (raw events and the stream helper), the stored
// response by id (retrieve, input items, delete), a tool round trip by previous_response_id, and parse.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { z } from 'zod';
import { zodResponsesFunction, zodTextFormat } from 'openai/helpers/zod';
import { CASE, CHAT_MODEL, openaiClient } from './gateway.js';

// At temperature 0 the model answers this in a dozen tokens and stops, well inside the budget.
const SHORT = { model: CHAT_MODEL, input: 'What is 2+2?', max_output_tokens: 48, temperature: 0 };

const WEATHER_TOOL = {
  type: 'function',
  name: 'get_weather',
  description: 'The current weather in a city.',
  parameters: {
    type: 'object', properties: { city: { type: 'string' } }, required: ['city'], additionalProperties: false,
  },
  strict: true,
};

const Review = z.object({ title: z.string(), count: z.number().int(), rating: z.number().int().min(1).max(5) });

/** The events a stream sends, in the order OpenAI sends them for one text message. */
const TEXT_EVENTS = [
  'response.created', 'response.in_progress', 'response.output_item.added', 'response.content_part.added',
  'response.output_text.delta', 'response.output_text.done', 'response.content_part.done',
  'response.output_item.done', 'response.completed',
];

/** ``types`` with each run of one type said once. */
const runs = (types) => types.filter((t, i) => t !== types[i - 1]);

function assertMessage(response) {
  assert.equal(response.object, 'response');
  assert.match(response.id, /^resp_/);
  assert.equal(response.model, CHAT_MODEL);
  const [message] = response.output;
  assert.equal(message.type, 'message');
  assert.equal(message.role, 'assistant');
  assert.match(message.id, /^msg_/);
  assert.equal(message.content[0].type, 'output_text');
  assert.equal(response.output_text, message.content[0].text, 'the SDK joins output_text from the output');
}

test('responses.create: output_text, status and usage', CASE, async () => {
  const { client, sent, paths } = openaiClient();
  const response = await client.responses.create(SHORT);
  assert.deepEqual(paths, ['POST /responses']);
  assert.equal(sent[0].input, 'What is 2+2?');
  assertMessage(response);
  assert.ok(response.output_text.length > 0);
  assert.equal(response.status, 'completed');
  assert.equal(response.output[0].status, 'completed');
  assert.equal(response.max_output_tokens, 48);
  assert.equal(response.temperature, 0);
  const { usage } = response;
  assert.ok(usage.input_tokens > 0 && usage.output_tokens > 0 && usage.output_tokens <= 48, JSON.stringify(usage));
  assert.equal(usage.total_tokens, usage.input_tokens + usage.output_tokens);
});

test('responses.create: cut at max_output_tokens, status incomplete', CASE, async () => {
  const { client } = openaiClient();
  const response = await client.responses.create({
    model: CHAT_MODEL, input: 'Tell me about the sea.', max_output_tokens: 16, temperature: 0,
  });
  assert.equal(response.status, 'incomplete');
  assert.deepEqual(response.incomplete_details, { reason: 'max_output_tokens' });
  assert.equal(response.usage.output_tokens, 16);
  assert.ok(response.output_text.length > 0);
});

test('stream: true: the events in order, numbered, response.completed last', CASE, async () => {
  const { client, sent } = openaiClient();
  const stream = await client.responses.create({ ...SHORT, stream: true });
  const events = [];
  for await (const event of stream) events.push(event);
  assert.equal(sent[0].stream, true);
  assert.deepEqual(runs(events.map((e) => e.type)), TEXT_EVENTS);
  events.forEach((event, i) => assert.equal(event.sequence_number, i, `event ${i} (${event.type})`));
  const deltas = events.filter((e) => e.type === 'response.output_text.delta');
  assert.ok(deltas.length > 1, 'the text came in pieces');
  const text = deltas.map((e) => e.delta).join('');
  const [created] = events;
  const completed = events.at(-1).response;
  assert.equal(created.response.status, 'in_progress');
  assert.deepEqual(created.response.output, []);
  assert.equal(completed.id, created.response.id);
  assert.equal(completed.status, 'completed');
  assert.ok(completed.usage.output_tokens > 0);
  const itemId = completed.output[0].id;
  assert.ok(deltas.every((e) => e.item_id === itemId && e.output_index === 0 && e.content_index === 0));
  assert.equal(events.find((e) => e.type === 'response.output_text.done').text, text);
  assert.equal(completed.output[0].content[0].text, text);
});

test('the stream helper: text deltas and finalResponse() agree', CASE, async () => {
  const { client } = openaiClient();
  const stream = client.responses.stream({ ...SHORT, input: 'Reply with one word: yes or no.' });
  let deltas = '';
  const types = [];
  stream.on('response.output_text.delta', (event) => { deltas += event.delta; });
  stream.on('event', (event) => types.push(event.type));
  const final = await stream.finalResponse();
  assertMessage(final);
  assert.ok(deltas.length > 0);
  assert.equal(final.output_text, deltas);
  assert.equal(final.status, 'completed');
  assert.equal(types.at(-1), 'response.completed');
});

test('a stored response: retrieve, inputItems.list, delete, then 404', CASE, async () => {
  const { client, paths } = openaiClient();
  const input = [{ role: 'developer', content: 'Answer briefly.' }, { role: 'user', content: 'What is 2+2?' }];
  const created = await client.responses.create({ ...SHORT, input });
  const id = created.id;

  const got = await client.responses.retrieve(id);
  assert.equal(got.id, id);
  assert.equal(got.status, created.status);
  assert.equal(got.output_text, created.output_text);
  assert.deepEqual(got.output, created.output);
  assert.deepEqual(got.usage, created.usage);

  const page = await client.responses.inputItems.list(id, { order: 'asc' });
  assert.deepEqual(page.data.map((item) => [item.type, item.role]), [['message', 'developer'], ['message', 'user']]);
  assert.deepEqual(page.data[1].content, [{ type: 'input_text', text: 'What is 2+2?' }]);
  assert.ok(page.data.every((item) => typeof item.id === 'string' && item.id.length > 0));
  const newest = await client.responses.inputItems.list(id);
  assert.deepEqual(newest.data.map((item) => item.id), page.data.map((item) => item.id).reverse(),
    'the default order is newest first');
  const seen = [];
  for await (const item of client.responses.inputItems.list(id, { order: 'asc', limit: 1 })) seen.push(item.id);
  assert.deepEqual(seen, page.data.map((item) => item.id), 'the SDK pages through, one at a time');

  // Typed `void` by the SDK, which still hands back the JSON body OpenAI answers with.
  assert.deepEqual(await client.responses.delete(id), { id, object: 'response.deleted', deleted: true });
  await assert.rejects(client.responses.retrieve(id), (e) => e instanceof OpenAI.NotFoundError && e.status === 404);
  await assert.rejects(client.responses.inputItems.list(id), (e) => e.status === 404);
  await assert.rejects(client.responses.delete(id), (e) => e.status === 404);
  assert.deepEqual(paths.slice(0, 2), ['POST /responses', `GET /responses/${id}`]);
  assert.ok(paths.includes(`DELETE /responses/${id}`));
});

test('store: false: the response is not kept', CASE, async () => {
  const { client } = openaiClient();
  const response = await client.responses.create({ ...SHORT, store: false });
  assert.equal(response.store, false);
  await assert.rejects(client.responses.retrieve(response.id), (e) => e.status === 404);
  await assert.rejects(
    client.responses.create({ ...SHORT, input: 'And 3+3?', previous_response_id: response.id }),
    (e) => e.status === 400 && e.param === 'previous_response_id');
});

test('a forced tool call, its output sent back by previous_response_id', CASE, async () => {
  const { client, sent } = openaiClient();
  const first = await client.responses.create({
    model: CHAT_MODEL, input: 'What is the weather in Paris?', tools: [WEATHER_TOOL], max_output_tokens: 60,
    temperature: 0, tool_choice: { type: 'function', name: 'get_weather' },
  });
  const calls = first.output.filter((item) => item.type === 'function_call');
  assert.equal(calls.length, 1, `one function call expected: ${JSON.stringify(first.output)}`);
  const [call] = calls;
  assert.equal(call.name, 'get_weather');
  assert.match(call.id, /^fc_/);
  assert.match(call.call_id, /^call_/);
  const args = JSON.parse(call.arguments);
  assert.deepEqual(Object.keys(args), ['city']);
  assert.equal(typeof args.city, 'string');
  assert.equal(first.output_text, '', 'no message beside the forced call');

  const result = JSON.stringify({ city: args.city, temperature_c: 21, sky: 'clear', station: 'ZX-4417' });
  const second = await client.responses.create({
    model: CHAT_MODEL, previous_response_id: first.id, tools: [WEATHER_TOOL], max_output_tokens: 24,
    temperature: 0, input: [{ type: 'function_call_output', call_id: call.call_id, output: result }],
  });
  assert.equal(sent[1].previous_response_id, first.id);
  assert.equal(second.previous_response_id, first.id);
  assert.equal(second.status === 'failed', false);
  assert.equal(second.output.at(-1).type, 'message', `an answer in text: ${JSON.stringify(second.output)}`);
  // The continuation read the stored conversation: the call, then its result, on top of the first prompt.
  assert.ok(second.usage.input_tokens > first.usage.input_tokens + 15,
    `input tokens ${first.usage.input_tokens} -> ${second.usage.input_tokens}`);
  const items = await client.responses.inputItems.list(second.id);
  assert.deepEqual(items.data.map((item) => [item.type, item.call_id]), [['function_call_output', call.call_id]]);
});

test('stream: true with a forced tool call: the arguments streamed, then done', CASE, async () => {
  const { client } = openaiClient();
  const stream = await client.responses.create({
    model: CHAT_MODEL, input: 'Weather in Oslo?', tools: [WEATHER_TOOL], max_output_tokens: 60, temperature: 0,
    tool_choice: { type: 'function', name: 'get_weather' }, stream: true,
  });
  const events = [];
  for await (const event of stream) events.push(event);
  const deltas = events.filter((e) => e.type === 'response.function_call_arguments.delta');
  const [done] = events.filter((e) => e.type === 'response.function_call_arguments.done');
  const call = events.at(-1).response.output.find((item) => item.type === 'function_call');
  assert.ok(deltas.length > 0);
  assert.equal(deltas.map((e) => e.delta).join(''), done.arguments);
  assert.equal(call.arguments, done.arguments);
  assert.ok(deltas.every((e) => e.item_id === call.id));
  assert.equal(typeof JSON.parse(done.arguments).city, 'string');
  assert.equal(events.at(-1).type, 'response.completed');
});

test('responses.parse with zodTextFormat: output_parsed validates', CASE, async () => {
  const { client, sent } = openaiClient();
  const response = await client.responses.parse({
    model: CHAT_MODEL, input: 'Review a film: a title, how many times you saw it, a rating.',
    text: { format: zodTextFormat(Review, 'review') }, max_output_tokens: 200, temperature: 0,
  });
  const format = sent[0].text.format;
  assert.equal(format.type, 'json_schema');
  assert.equal(format.name, 'review');
  assert.equal(format.strict, true);
  assert.equal(format.schema.properties.count.maximum, Number.MAX_SAFE_INTEGER, 'zod emits the safe-integer bounds');
  assert.equal(response.status, 'completed');
  const review = Review.parse(response.output_parsed);
  assert.ok(Number.isSafeInteger(review.count) && review.rating >= 1 && review.rating <= 5, JSON.stringify(review));
  assert.deepEqual(review, JSON.parse(response.output_text));
  assert.deepEqual(response.text.format.name, 'review');
});

test('responses.parse with zodResponsesFunction: a forced call, its arguments parsed', CASE, async () => {
  const { client } = openaiClient();
  const SetVolume = z.object({ room: z.string(), level: z.number().int().min(0).max(10) });
  const response = await client.responses.parse({
    model: CHAT_MODEL, input: 'Turn the kitchen volume up.', max_output_tokens: 80, temperature: 0,
    tools: [zodResponsesFunction({ name: 'set_volume', parameters: SetVolume })],
    tool_choice: { type: 'function', name: 'set_volume' },
  });
  const call = response.output.find((item) => item.type === 'function_call');
  assert.equal(call.name, 'set_volume');
  const args = SetVolume.parse(call.parsed_arguments);
  assert.ok(Number.isInteger(args.level) && args.level >= 0 && args.level <= 10, `level ${args.level}`);
});
