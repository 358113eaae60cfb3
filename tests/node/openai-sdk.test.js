// The OpenAI Node SDK, used the way its README and the OpenAI docs show it, against the gateway.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { zodFunction, zodResponseFormat } from 'openai/helpers/zod';
import { CASE, CHAT_MODEL, EMBEDDING_MODEL, openaiClient } from './gateway.js';

const WEATHER_TOOL = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The current weather in a city.',
    parameters: {
      type: 'object',
      properties: { city: { type: 'string' } },
      required: ['city'],
      additionalProperties: false,
    },
    strict: true,
  },
};

// z.number().int() emits the ±(2^53 - 1) bounds; the second field has a small range of its own.
// Cases whose output has a free-length part run at temperature 0, so a run is the same every time and
// never cut short by max_tokens on an unlucky sample; what they assert holds at any temperature.
const Review = z.object({
  title: z.string(),
  count: z.number().int(),
  rating: z.number().int().min(1).max(5),
});

function assertReview(value) {
  const review = Review.parse(value);
  assert.ok(Number.isSafeInteger(review.count), `count ${review.count} is not a safe integer`);
  assert.ok(review.rating >= 1 && review.rating <= 5, `rating ${review.rating} is out of 1..5`);
}

test('the reply message appended as-is is accepted in the next request', CASE, async () => {
  const { client, sent } = openaiClient();
  const messages = [{ role: 'user', content: 'Say hello.' }];
  const first = await client.chat.completions.create({ model: CHAT_MODEL, messages, max_tokens: 12 });
  const reply = first.choices[0].message;
  assert.equal(reply.role, 'assistant');
  assert.equal(typeof reply.content, 'string');
  messages.push(reply);
  messages.push({ role: 'user', content: 'And once more.' });
  const second = await client.chat.completions.create({ model: CHAT_MODEL, messages, max_tokens: 12 });
  assert.equal(typeof second.choices[0].message.content, 'string');
  // The reply went back with every field the gateway gave it, annotations and refusal included.
  assert.deepEqual(sent[1].messages[1], JSON.parse(JSON.stringify(reply)));
  assert.ok(second.usage.prompt_tokens > first.usage.prompt_tokens,
    `the second prompt (${second.usage.prompt_tokens} tokens) should hold the first (${first.usage.prompt_tokens})`);
});

test('a forced tool call, its result sent back as a tool message', CASE, async () => {
  const { client, sent } = openaiClient();
  const messages = [{ role: 'user', content: 'What is the weather in Paris?' }];
  const first = await client.chat.completions.create({
    model: CHAT_MODEL, messages, tools: [WEATHER_TOOL], max_tokens: 60, temperature: 0,
    tool_choice: { type: 'function', function: { name: 'get_weather' } },
  });
  const message = first.choices[0].message;
  assert.equal(message.tool_calls?.length, 1, `one tool call expected: ${JSON.stringify(message)}`);
  const call = message.tool_calls[0];
  assert.equal(call.type, 'function');
  assert.equal(call.function.name, 'get_weather');
  const args = JSON.parse(call.function.arguments);
  assert.deepEqual(Object.keys(args), ['city']);
  assert.equal(typeof args.city, 'string');

  const result = JSON.stringify({ city: args.city, temperature_c: 21, sky: 'clear', station: 'ZX-4417' });
  messages.push(message);
  messages.push({ role: 'tool', tool_call_id: call.id, content: result });
  const second = await client.chat.completions.create({
    model: CHAT_MODEL, messages, tools: [WEATHER_TOOL], max_tokens: 16,
  });
  assert.equal(typeof second.choices[0].message.content, 'string');
  assert.deepEqual(sent[1].messages.at(-1), { role: 'tool', tool_call_id: call.id, content: result });
  assert.equal(sent[1].messages[1].tool_calls[0].id, call.id);
  // The model read the call and its result: the prompt grew by more than the result's own length in
  // tokens would allow if either were dropped.
  assert.ok(second.usage.prompt_tokens > first.usage.prompt_tokens + 15,
    `prompt tokens ${first.usage.prompt_tokens} -> ${second.usage.prompt_tokens}`);
});

test('zodResponseFormat with integers and bounds, through chat.completions.parse', CASE, async () => {
  const { client, sent } = openaiClient();
  const completion = await client.chat.completions.parse({
    model: CHAT_MODEL,
    messages: [{ role: 'user', content: 'Review a film: a title, how many times you saw it, a rating.' }],
    response_format: zodResponseFormat(Review, 'review'),
    max_tokens: 200,
    temperature: 0,
  });
  const schema = sent[0].response_format.json_schema.schema;
  assert.equal(schema.properties.count.maximum, Number.MAX_SAFE_INTEGER, 'zod emits the safe-integer bounds');
  assert.equal(schema.properties.rating.minimum, 1);
  const message = completion.choices[0].message;
  assert.equal(completion.choices[0].finish_reason, 'stop');
  assertReview(message.parsed);
  assert.deepEqual(message.parsed, JSON.parse(message.content));
  // The parsed message goes back as the SDK keeps it (`parsed` included), like any reply.
  const next = await client.chat.completions.create({
    model: CHAT_MODEL, max_tokens: 8,
    messages: [{ role: 'user', content: 'Review a film.' }, message, { role: 'user', content: 'Thanks.' }],
  });
  assert.equal(typeof next.choices[0].message.content, 'string');
  assert.deepEqual(sent[1].messages[1].parsed, message.parsed);
});

test('zodFunction with bounded integers, forced, parsed arguments', CASE, async () => {
  const { client } = openaiClient();
  const SetVolume = z.object({ room: z.string(), level: z.number().int().min(0).max(10) });
  const completion = await client.chat.completions.parse({
    model: CHAT_MODEL,
    messages: [{ role: 'user', content: 'Turn the kitchen volume up.' }],
    tools: [zodFunction({ name: 'set_volume', parameters: SetVolume })],
    tool_choice: { type: 'function', function: { name: 'set_volume' } },
    max_tokens: 80,
    temperature: 0,
  });
  const call = completion.choices[0].message.tool_calls[0];
  assert.equal(call.function.name, 'set_volume');
  const args = SetVolume.parse(call.function.parsed_arguments);
  assert.ok(Number.isInteger(args.level) && args.level >= 0 && args.level <= 10, `level ${args.level}`);
});

test('stream: true, chunk by chunk, with usage', CASE, async () => {
  const { client } = openaiClient();
  const stream = await client.chat.completions.create({
    model: CHAT_MODEL, messages: [{ role: 'user', content: 'Count to five.' }], max_tokens: 16,
    stream: true, stream_options: { include_usage: true },
  });
  let text = '';
  let finish = null;
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      text += choice.delta.content ?? '';
      finish = choice.finish_reason ?? finish;
    }
  }
  assert.ok(text.length > 0, 'the stream carried text');
  assert.ok(['stop', 'length'].includes(finish), `finish_reason ${finish}`);
  assert.ok(usage && usage.completion_tokens > 0 && usage.completion_tokens <= 16, JSON.stringify(usage));
});

test('the stream helper: content events and the final completion agree', CASE, async () => {
  const { client } = openaiClient();
  const stream = client.chat.completions.stream({
    model: CHAT_MODEL, messages: [{ role: 'user', content: 'Name a colour.' }], max_tokens: 16,
  });
  let deltas = '';
  stream.on('content', (delta) => { deltas += delta; });
  const final = await stream.finalChatCompletion();
  assert.ok(deltas.length > 0);
  assert.equal(final.choices[0].message.content, deltas);
  assert.equal(await stream.finalContent(), deltas);
});

test('the stream helper: a forced tool call streamed, then its result sent back', CASE, async () => {
  const { client, sent } = openaiClient();
  const messages = [{ role: 'user', content: 'Weather in Oslo?' }];
  const stream = client.chat.completions.stream({
    model: CHAT_MODEL, messages, tools: [WEATHER_TOOL], max_tokens: 60, temperature: 0,
    tool_choice: { type: 'function', function: { name: 'get_weather' } },
  });
  const done = [];
  stream.on('tool_calls.function.arguments.done', (event) => done.push(event));
  const final = await stream.finalChatCompletion();
  const message = final.choices[0].message;
  assert.equal(done.length, 1);
  assert.equal(done[0].name, 'get_weather');
  assert.equal(typeof done[0].parsed_arguments.city, 'string', 'strict tools are parsed by the helper');
  assert.equal(message.tool_calls[0].function.arguments, done[0].arguments);
  messages.push(message);
  messages.push({ role: 'tool', tool_call_id: message.tool_calls[0].id, content: '{"temperature_c": 4}' });
  const next = await client.chat.completions.create({ model: CHAT_MODEL, messages, max_tokens: 8 });
  assert.equal(typeof next.choices[0].message.content, 'string');
  assert.equal(sent[1].messages.length, 3);
});

test('the stream helper with zodResponseFormat parses the streamed object', CASE, async () => {
  const { client } = openaiClient();
  const stream = client.chat.completions.stream({
    model: CHAT_MODEL,
    messages: [{ role: 'user', content: 'Review a book.' }],
    response_format: zodResponseFormat(Review, 'review'),
    max_tokens: 200,
    temperature: 0,
  });
  const final = await stream.finalChatCompletion();
  assertReview(final.choices[0].message.parsed);
});

test('embeddings: the SDK asks for base64 by default and decodes it to the float vector', CASE, async () => {
  const { client, sent } = openaiClient();
  const texts = ['a quiet morning', 'a loud evening'];
  const packed = await client.embeddings.create({ model: EMBEDDING_MODEL, input: texts });
  const floats = await client.embeddings.create({ model: EMBEDDING_MODEL, input: texts, encoding_format: 'float' });
  assert.equal(sent[0].encoding_format, 'base64');
  assert.equal(packed.data.length, 2);
  for (const [i, item] of packed.data.entries()) {
    assert.equal(item.index, i);
    assert.equal(item.embedding.length, floats.data[i].embedding.length);
    // base64 carries float32: equal to the float form within float32 rounding.
    item.embedding.forEach((x, j) => assert.ok(Math.abs(x - floats.data[i].embedding[j]) < 1e-6));
  }
  assert.notDeepEqual(packed.data[0].embedding, packed.data[1].embedding);
});
