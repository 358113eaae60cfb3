// The Vercel AI SDK with its OpenAI provider's default model, `openai(model)`: the Responses API (`POST
// /responses`), the way most apps written with the SDK call it now. The chat completions cases are in
// ai-sdk.test.js. Requests are recorded, so a case asserts the Responses body that reached the gateway.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { generateObject, generateText, Output, streamText } from 'ai';
import { aiProvider, CASE, CHAT_MODEL } from './gateway.js';
import { firstStepForced, Forecast, forecastTool } from './forecast.js';

/** The items of a Responses request body's `input` of one type. */
const itemsOf = (body, type) => body.input.filter((item) => item.type === type);

/** Asserts the second request of a tool loop sent the call and its result back as items. */
function assertToolRoundTrip(sent, call) {
  assert.equal(sent.length, 2, 'one request per step');
  const [echoed] = itemsOf(sent[1], 'function_call');
  assert.ok(echoed, `no function_call item in ${JSON.stringify(sent[1].input)}`);
  assert.equal(echoed.call_id, call.toolCallId);
  assert.equal(echoed.name, 'weather');
  assert.deepEqual(JSON.parse(echoed.arguments), call.input);
  const outputs = itemsOf(sent[1], 'function_call_output');
  assert.equal(outputs.length, 1, `one function_call_output item in ${JSON.stringify(sent[1].input)}`);
  assert.equal(outputs[0].call_id, call.toolCallId);
  assert.match(outputs[0].output, /ZX-4417/);
  assert.deepEqual(itemsOf(sent[1], 'item_reference'), [], 'a tool call goes back in full, not by reference');
  assert.equal(sent[1].tool_choice, 'none');
}

test('generateText: text and usage, from POST /responses', CASE, async () => {
  const { openai, sent, paths } = aiProvider();
  const result = await generateText({
    model: openai(CHAT_MODEL), prompt: 'What is 2+2?', maxOutputTokens: 48, temperature: 0, maxRetries: 0,
  });
  assert.deepEqual(paths, ['POST /responses']);
  assert.equal(sent[0].model, CHAT_MODEL);
  assert.equal(sent[0].messages, undefined, 'a Responses body, not a chat completions one');
  assert.deepEqual(sent[0].input, [{ role: 'user', content: [{ type: 'input_text', text: 'What is 2+2?' }] }]);
  assert.equal(sent[0].max_output_tokens, 48);
  assert.ok(result.text.length > 0);
  assert.equal(result.finishReason, 'stop');
  const { usage } = result;
  assert.ok(usage.inputTokens > 0 && usage.outputTokens > 0 && usage.outputTokens <= 48, JSON.stringify(usage));
  assert.equal(usage.totalTokens, usage.inputTokens + usage.outputTokens);
  assert.match(result.response.id, /^resp_/);
  assert.equal(result.providerMetadata.openai.responseId, result.response.id);
  assert.match(result.content[0].providerMetadata.openai.itemId, /^msg_/);
});

test('streamText: the text deltas make the final text', CASE, async () => {
  const { openai, sent, paths } = aiProvider();
  const result = streamText({
    model: openai(CHAT_MODEL), prompt: 'What is 2+2?', maxOutputTokens: 48, temperature: 0, maxRetries: 0,
  });
  const parts = [];
  let text = '';
  for await (const part of result.fullStream) {
    parts.push(part.type);
    if (part.type === 'text-delta') text += part.text;
    assert.notEqual(part.type, 'error', JSON.stringify(part));
  }
  assert.deepEqual(paths, ['POST /responses']);
  assert.equal(sent[0].stream, true);
  assert.ok(parts.filter((t) => t === 'text-delta').length > 1, `the text came in pieces: ${parts.join(' ')}`);
  assert.ok(parts.indexOf('text-start') < parts.indexOf('text-delta'));
  assert.ok(parts.lastIndexOf('text-delta') < parts.indexOf('text-end'));
  assert.equal(parts.at(-1), 'finish');
  assert.ok(text.length > 0);
  assert.equal(await result.text, text);
  assert.equal(await result.finishReason, 'stop');
  const usage = await result.usage;
  assert.ok(usage.outputTokens > 0 && usage.outputTokens <= 48, JSON.stringify(usage));
  assert.match((await result.response).id, /^resp_/);
});

test('streamText: cut at maxOutputTokens, finish reason length', CASE, async () => {
  const { openai } = aiProvider();
  const result = streamText({
    model: openai(CHAT_MODEL), prompt: 'Tell me about the sea.', maxOutputTokens: 16, temperature: 0, maxRetries: 0,
  });
  let text = '';
  for await (const delta of result.textStream) text += delta;
  assert.ok(text.length > 0);
  assert.equal(await result.finishReason, 'length');
  assert.equal((await result.usage).outputTokens, 16);
});

test('generateText: a forced tool call, its result in the next request as function_call_output', CASE, async () => {
  const { openai, sent, paths } = aiProvider();
  const { calls, weather } = forecastTool();
  const result = await generateText({
    model: openai(CHAT_MODEL),
    prompt: 'What is the weather in Paris for the next three days?',
    tools: { weather },
    ...firstStepForced('weather'),
    maxOutputTokens: 60,
    temperature: 0,
    maxRetries: 0,
  });
  assert.deepEqual(paths, ['POST /responses', 'POST /responses']);
  assert.deepEqual(sent[0].tool_choice, { type: 'function', name: 'weather' });
  assert.equal(sent[0].tools[0].type, 'function');
  assert.equal(sent[0].tools[0].parameters.properties.days.maximum, 7);
  assert.equal(calls.length, 1, 'the tool ran once');
  Forecast.parse(calls[0]);
  assert.equal(result.steps.length, 2);
  assert.equal(result.steps[0].finishReason, 'tool-calls');
  const [call] = result.steps[0].toolCalls;
  assert.equal(call.toolName, 'weather');
  assert.match(call.providerMetadata.openai.itemId, /^fc_/);
  assert.equal(result.steps[0].toolResults[0].output.station, 'ZX-4417');
  assertToolRoundTrip(sent, call);
  assert.notEqual(result.steps[1].finishReason, 'tool-calls');
  assert.equal(typeof result.text, 'string');
});

test('streamText: a forced tool call streamed, its result in the next request', CASE, async () => {
  const { openai, sent } = aiProvider();
  const { calls, weather } = forecastTool();
  const errors = [];
  const result = streamText({
    model: openai(CHAT_MODEL),
    prompt: 'Forecast for Oslo this week.',
    tools: { weather },
    ...firstStepForced('weather'),
    maxOutputTokens: 60,
    temperature: 0,
    maxRetries: 0,
    onError: ({ error }) => errors.push(error),
  });
  const parts = [];
  for await (const part of result.fullStream) parts.push(part.type);
  assert.deepEqual(errors, []);
  assert.equal(calls.length, 1);
  Forecast.parse(calls[0]);
  assert.ok(parts.includes('tool-input-delta'), `the arguments were streamed: ${parts.join(' ')}`);
  assert.ok(parts.indexOf('tool-input-start') < parts.indexOf('tool-call'));
  assert.ok(parts.indexOf('tool-call') < parts.indexOf('tool-result'));
  const steps = await result.steps;
  assert.equal(steps.length, 2);
  assertToolRoundTrip(sent, steps[0].toolCalls[0]);
});

test('generateObject: a zod schema as text.format json_schema, the object validates', CASE, async () => {
  const { openai, sent } = aiProvider();
  const Order = z.object({
    item: z.enum(['apples', 'pears', 'plums']), quantity: z.number().int().min(1).max(12), rush: z.boolean(),
  });
  const { object, finishReason } = await generateObject({
    model: openai(CHAT_MODEL), schema: Order, prompt: 'Order some apples.',
    maxOutputTokens: 160, temperature: 0, maxRetries: 0,
  });
  const format = sent[0].text.format;
  assert.equal(format.type, 'json_schema');
  assert.equal(format.schema.properties.quantity.maximum, 12);
  assert.deepEqual(format.schema.properties.item.enum, ['apples', 'pears', 'plums']);
  assert.equal(finishReason, 'stop');
  const order = Order.parse(object);
  assert.ok(order.quantity >= 1 && order.quantity <= 12);
});

test('generateText with Output.object: the output validates', CASE, async () => {
  const { openai, sent } = aiProvider();
  const Count = z.object({ label: z.string(), total: z.number().int(), score: z.number().int().min(-3).max(3) });
  const { output } = await generateText({
    model: openai(CHAT_MODEL), output: Output.object({ schema: Count }), prompt: 'Count the stars.',
    maxOutputTokens: 160, temperature: 0, maxRetries: 0,
  });
  assert.equal(sent[0].text.format.type, 'json_schema');
  assert.equal(sent[0].text.format.schema.properties.total.minimum, Number.MIN_SAFE_INTEGER);
  const value = Count.parse(output);
  assert.ok(Number.isSafeInteger(value.total) && value.score >= -3 && value.score <= 3);
});

test('a conversation continued with providerOptions.openai.previousResponseId', CASE, async () => {
  const { openai, sent } = aiProvider();
  const first = await generateText({
    model: openai(CHAT_MODEL), prompt: 'My name is Ada. Say hello.', maxOutputTokens: 24, temperature: 0, maxRetries: 0,
  });
  const second = await generateText({
    model: openai(CHAT_MODEL), prompt: 'What is my name?', maxOutputTokens: 24, temperature: 0, maxRetries: 0,
    providerOptions: { openai: { previousResponseId: first.providerMetadata.openai.responseId } },
  });
  assert.equal(sent[1].previous_response_id, first.response.id);
  assert.equal(sent[1].input.length, 1, 'only the new turn is sent');
  assert.equal(typeof second.text, 'string');
  // The stored conversation was read: the second prompt holds the first and its answer.
  assert.ok(second.usage.inputTokens > first.usage.inputTokens + first.usage.outputTokens,
    `input tokens ${first.usage.inputTokens} (+${first.usage.outputTokens} out) -> ${second.usage.inputTokens}`);
});

test('a conversation continued with store: false sends the assistant message itself', CASE, async () => {
  const { openai, sent } = aiProvider();
  const providerOptions = { openai: { store: false } };
  const messages = [{ role: 'user', content: 'Say hello.' }];
  const first = await generateText({
    model: openai(CHAT_MODEL), messages, providerOptions, maxOutputTokens: 16, temperature: 0, maxRetries: 0,
  });
  messages.push(...first.response.messages, { role: 'user', content: 'Again.' });
  const second = await generateText({
    model: openai(CHAT_MODEL), messages, providerOptions, maxOutputTokens: 16, temperature: 0, maxRetries: 0,
  });
  assert.equal(sent[0].store, false);
  const [reply] = sent[1].input.filter((item) => item.role === 'assistant');
  assert.deepEqual(reply.content, [{ type: 'output_text', text: first.text }]);
  assert.equal(typeof second.text, 'string');
  assert.ok(second.usage.inputTokens > first.usage.inputTokens + 5);
});

// With the default `store` the SDK sends an earlier answer it got back (its text carries the item id)
// as `{"type": "item_reference", "id": "msg_..."}`: appending `response.messages` (or what useChat
// keeps) and calling again works only if the gateway finds the item in its store.
test('a conversation continued by appending response.messages (default store: item_reference)',
  CASE, async () => {
    const { openai, sent } = aiProvider();
    const messages = [{ role: 'user', content: 'Say hello.' }];
    const first = await generateText({
      model: openai(CHAT_MODEL), messages, maxOutputTokens: 16, temperature: 0, maxRetries: 0,
    });
    messages.push(...first.response.messages, { role: 'user', content: 'Again.' });
    const second = await generateText({
      model: openai(CHAT_MODEL), messages, maxOutputTokens: 16, temperature: 0, maxRetries: 0,
    });
    assert.deepEqual(sent[1].input[1], { type: 'item_reference', id: first.content[0].providerMetadata.openai.itemId });
    assert.equal(typeof second.text, 'string');
    assert.ok(second.usage.inputTokens > first.usage.inputTokens + first.usage.outputTokens);
  });
