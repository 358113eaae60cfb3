// The Vercel AI SDK with its OpenAI provider, used the way its docs show it, against the gateway.
// `openai(model)` means the Responses API in this SDK; chat completions is `openai.chat(model)`. The last
// cases use the SDK's provider for OpenAI-compatible servers, the one its docs give for local servers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { z } from 'zod';
import {
  embed, embedMany, cosineSimilarity, generateObject, generateText, Output, streamText,
} from 'ai';
import { aiProvider, CASE, CHAT_MODEL, compatibleProvider, EMBEDDING_MODEL } from './gateway.js';
import { firstStepForced, Forecast, forecastTool } from './forecast.js';

function assertForecastInput(input) {
  const { city, days } = Forecast.parse(input);
  assert.equal(typeof city, 'string');
  assert.ok(Number.isInteger(days) && days >= 1 && days <= 7, `days ${days}`);
}

/** The tool message of a chat completions request body that answers call `id`. */
function toolMessage(body, id) {
  return body.messages.find((m) => m.role === 'tool' && m.tool_call_id === id);
}

test('generateText: a forced tool call, its result in the next step', CASE, async () => {
  const { openai, sent } = aiProvider();
  const { calls, weather } = forecastTool();
  const result = await generateText({
    model: openai.chat(CHAT_MODEL),
    prompt: 'What is the weather in Paris for the next three days?',
    tools: { weather },
    ...firstStepForced('weather'),
    maxOutputTokens: 60,
    temperature: 0,
    maxRetries: 0,
  });
  assert.equal(calls.length, 1, 'the tool ran once');
  assertForecastInput(calls[0]);
  assert.equal(result.steps.length, 2);
  const [call] = result.steps[0].toolCalls;
  assert.equal(call.toolName, 'weather');
  assert.deepEqual(result.steps[0].toolResults[0].output.station, 'ZX-4417');
  // The second request carried the call and the tool's result.
  assert.equal(sent.length, 2);
  const answer = toolMessage(sent[1], call.toolCallId);
  assert.ok(answer, `no tool message in ${JSON.stringify(sent[1].messages)}`);
  assert.match(answer.content, /ZX-4417/);
  assert.equal(result.steps[1].finishReason === 'tool-calls', false);
  assert.equal(typeof result.text, 'string');
  assert.ok(result.totalUsage.inputTokens > result.steps[0].usage.inputTokens);
});

test('streamText: text deltas, finish reason and usage', CASE, async () => {
  const { openai } = aiProvider();
  const result = streamText({
    model: openai.chat(CHAT_MODEL), prompt: 'Tell me about the sea.', maxOutputTokens: 16, maxRetries: 0,
  });
  let text = '';
  for await (const delta of result.textStream) text += delta;
  assert.ok(text.length > 0);
  assert.equal(await result.text, text);
  assert.ok(['stop', 'length'].includes(await result.finishReason), await result.finishReason);
  const usage = await result.usage;
  assert.ok(usage.outputTokens > 0 && usage.outputTokens <= 16, JSON.stringify(usage));
});

test('streamText: a forced tool call streamed, its result in the next step', CASE, async () => {
  const { openai, sent } = aiProvider();
  const { calls, weather } = forecastTool();
  const errors = [];
  const result = streamText({
    model: openai.chat(CHAT_MODEL),
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
  assertForecastInput(calls[0]);
  assert.ok(parts.includes('tool-input-delta'), `the arguments were streamed: ${parts.join(' ')}`);
  assert.ok(parts.includes('tool-result'));
  const steps = await result.steps;
  assert.equal(steps.length, 2);
  assert.match(toolMessage(sent[1], steps[0].toolCalls[0].toolCallId).content, /ZX-4417/);
});

test('generateObject with bounded integers', CASE, async () => {
  const { openai, sent } = aiProvider();
  const Order = z.object({ item: z.enum(['apples', 'pears', 'plums']), quantity: z.number().int().min(1).max(12), rush: z.boolean() });
  const { object } = await generateObject({
    model: openai.chat(CHAT_MODEL),
    schema: Order,
    prompt: 'Order some apples.',
    maxOutputTokens: 160,
    temperature: 0,
    maxRetries: 0,
  });
  const format = sent[0].response_format;
  assert.equal(format.type, 'json_schema');
  assert.equal(format.json_schema.schema.properties.quantity.maximum, 12);
  const order = Order.parse(object);
  assert.ok(order.quantity >= 1 && order.quantity <= 12);
});

test('generateText with Output.object: z.number().int() and its safe-integer bounds', CASE, async () => {
  const { openai, sent } = aiProvider();
  const Count = z.object({ label: z.string(), total: z.number().int(), score: z.number().int().min(-3).max(3) });
  const { output } = await generateText({
    model: openai.chat(CHAT_MODEL),
    output: Output.object({ schema: Count }),
    prompt: 'Count the stars.',
    maxOutputTokens: 160,
    temperature: 0,
    maxRetries: 0,
  });
  assert.equal(sent[0].response_format.json_schema.schema.properties.total.minimum, Number.MIN_SAFE_INTEGER);
  const value = Count.parse(output);
  assert.ok(Number.isSafeInteger(value.total));
});

test('embed and embedMany', CASE, async () => {
  const { openai } = aiProvider();
  const model = openai.embedding(EMBEDDING_MODEL);
  const texts = ['sunny day at the beach', 'rain over the mountains', 'a sunny beach day'];
  const one = await embed({ model, value: texts[0], maxRetries: 0 });
  assert.ok(one.embedding.length > 0 && one.embedding.every(Number.isFinite));
  const many = await embedMany({ model, values: texts, maxRetries: 0 });
  assert.equal(many.embeddings.length, 3);
  assert.ok(cosineSimilarity(one.embedding, many.embeddings[0]) > 0.999, 'the same text, the same vector');
  assert.ok(cosineSimilarity(many.embeddings[0], many.embeddings[2])
    > cosineSimilarity(many.embeddings[0], many.embeddings[1]), 'closer meaning, closer vectors');
  assert.ok(many.usage.tokens > 0);
});

test('openai-compatible provider: a forced tool call, its result in the next step', CASE, async () => {
  const { provider, sent } = compatibleProvider();
  const { calls, weather } = forecastTool();
  const result = await generateText({
    model: provider.chatModel(CHAT_MODEL),
    prompt: 'Weather in Rome for two days?',
    tools: { weather },
    ...firstStepForced('weather'),
    maxOutputTokens: 60,
    temperature: 0,
    maxRetries: 0,
  });
  assert.equal(calls.length, 1);
  assertForecastInput(calls[0]);
  assert.equal(result.steps.length, 2);
  assert.match(toolMessage(sent[1], result.steps[0].toolCalls[0].toolCallId).content, /ZX-4417/);
});

test('openai-compatible provider: streamText with usage', CASE, async () => {
  const { provider, sent } = compatibleProvider();
  const result = streamText({
    model: provider.chatModel(CHAT_MODEL), prompt: 'Describe a tree.', maxOutputTokens: 12, maxRetries: 0,
  });
  let text = '';
  for await (const delta of result.textStream) text += delta;
  assert.ok(text.length > 0);
  assert.deepEqual(sent[0].stream_options, { include_usage: true });
  const usage = await result.usage;
  assert.ok(usage.outputTokens > 0 && usage.outputTokens <= 12, JSON.stringify(usage));
});

test('openai-compatible provider: generateObject with bounded integers', CASE, async () => {
  const { provider } = compatibleProvider();
  const Plan = z.object({
    task: z.string(), hours: z.number().int().min(1).max(8), steps: z.array(z.enum(['sand', 'prime', 'paint'])).max(3),
  });
  const { object } = await generateObject({
    model: provider.chatModel(CHAT_MODEL), schema: Plan, prompt: 'Plan painting a fence.',
    maxOutputTokens: 160, temperature: 0, maxRetries: 0,
  });
  const plan = Plan.parse(object);
  assert.ok(plan.hours >= 1 && plan.hours <= 8);
});

test('openai-compatible provider: embedMany', CASE, async () => {
  const { provider } = compatibleProvider();
  const { embeddings } = await embedMany({
    model: provider.embeddingModel(EMBEDDING_MODEL), values: ['one', 'two'], maxRetries: 0,
  });
  assert.equal(embeddings.length, 2);
  assert.equal(embeddings[0].length, embeddings[1].length);
  assert.ok(cosineSimilarity(embeddings[0], embeddings[1]) < 0.999, 'different texts, different vectors');
});
