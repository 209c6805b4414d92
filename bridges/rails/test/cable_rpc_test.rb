# frozen_string_literal: true

require_relative "test_helper"
require "active_support/all"
require "action_cable"
require "action_dispatch"
require "globalid"
require "active_support/key_generator"
require "active_support/messages/rotation_configuration"
require "rack/mock"
require "pushgate/cable/rpc"

GlobalID.app = "rpc-test"

# Records for GlobalID, found by id as ActiveRecord finds them.
class RPCTestRecord
  include GlobalID::Identification
  attr_reader :id, :name

  def initialize(id, name)
    @id = id
    @name = name
  end

  def self.all = const_get(:ALL)
  def self.find(id) = all.fetch(Integer(id)) { raise ArgumentError, "no #{self.name} #{id}" }
  def self.find_by(id) = id && all[Integer(id)]
end

class RPCUser < RPCTestRecord
  ALL = { 1 => new(1, "alice"), 2 => new(2, "bob") }.freeze
end

class RPCRoom < RPCTestRecord
  ALL = { 1 => new(1, "lobby"), 2 => new(2, "staff only") }.freeze
end

# What the app's callbacks did, in order, across calls.
RPC_EVENTS = Queue.new

module RPCTestCable
  class Connection < ActionCable::Connection::Base
    identified_by :current_user
    state_attr_accessor :locale

    def connect
      self.current_user = RPCUser.find_by(cookies.encrypted[:user_id]) || reject_unauthorized_connection
      self.locale = request.params["locale"] || "en"
    end

    def disconnect
      RPC_EVENTS << [:disconnect, current_user.name, locale]
    end
  end

  # Signs in from what a middleware put in the env (as Warden does for Devise).
  class EnvConnection < ActionCable::Connection::Base
    identified_by :current_user

    def connect
      self.current_user = RPCUser.find_by(env["test.user_id"]) || reject_unauthorized_connection
    end
  end
end

# A Rack middleware with a block, as Warden::Manager is built.
class UserFromHeader
  def initialize(app, header, &pick)
    @app = app
    @header = header
    @pick = pick
  end

  def call(env)
    env["test.user_id"] = @pick.call(env[@header])
    @app.call(env)
  end
end

class ChatChannel < ActionCable::Channel::Base
  include Pushgate::Cable::Presence
  state_attr_accessor :room

  def subscribed
    self.room = RPCRoom.find_by(params[:room])
    return reject if room.nil? || (room.id == 2 && current_user.id != 2)

    stream_for room, whisper: true
    transmit({ "text" => "welcome to #{room.name}, #{current_user.name}" })
    join_presence(id: current_user.id, info: { name: current_user.name })
  end

  def speak(data)
    RPC_EVENTS << [:speak, current_user.name, room.name, data["text"]]
    ChatChannel.broadcast_to(room, { "from" => current_user.name, "text" => data["text"] }, to_others: true)
  end

  def leave
    stop_stream_for room
    leave_presence(current_user.id)
  end

  def unsubscribed
    RPC_EVENTS << [:unsubscribed, current_user.name, room&.name]
  end
end

# The endpoint, called as the gateway calls it (AnyCable-Go's request
# bodies), answering AnyCable's JSON shapes byte for byte.
class CableRPCTest < Minitest::Test
  SECRET = "rpc-test-secret"
  KEY_BASE = "k" * 64
  ENV_CONFIG = begin
    generator = ActiveSupport::CachingKeyGenerator.new(ActiveSupport::KeyGenerator.new(KEY_BASE, iterations: 1000))
    {
      "action_dispatch.key_generator" => generator,
      "action_dispatch.secret_key_base" => KEY_BASE,
      "action_dispatch.signed_cookie_salt" => "signed cookie",
      "action_dispatch.encrypted_cookie_salt" => "encrypted cookie",
      "action_dispatch.encrypted_signed_cookie_salt" => "signed encrypted cookie",
      "action_dispatch.authenticated_encrypted_cookie_salt" => "authenticated encrypted cookie",
      "action_dispatch.use_authenticated_cookie_encryption" => true,
      "action_dispatch.encrypted_cookie_cipher" => "aes-256-gcm",
      "action_dispatch.signed_cookie_digest" => "SHA1",
      "action_dispatch.cookies_serializer" => :json,
      "action_dispatch.cookies_rotations" => ActiveSupport::Messages::RotationConfiguration.new,
      "action_dispatch.use_cookies_with_metadata" => true
    }.freeze
  end
  URL = "ws://localhost:8080/cable?locale=fr"
  LOBBY = JSON.generate("channel" => "ChatChannel", "room" => 1)
  STAFF = JSON.generate("channel" => "ChatChannel", "room" => 2)
  ALICE_IDS = JSON.generate("current_user" => RPCUser.find(1).to_gid_param)
  LOBBY_STATE = JSON.generate(RPCRoom.find(1).to_gid_param)

  def setup
    @topic = unique_topic("rpc")
    @server = ActionCable::Server::Base.new
    @server.config.cable = { "adapter" => "nsq", "url" => "http://#{NSQD.http_address}", "topic" => @topic }
    @server.config.logger = Logger.new(nil)
    @server.config.disable_request_forgery_protection = false
    @server.config.allowed_request_origins = ["http://localhost:8080"]
    @endpoint = Pushgate::Cable::RPC.new(secret: SECRET, connection_class: RPCTestCable::Connection,
                                         server: @server, env_config: ENV_CONFIG)
    @previous_server = ActionCable.server
    ActionCable.instance_variable_set(:@server, @server) # Channel.broadcast_to goes to ActionCable.server
    RPC_EVENTS.clear
  end

  def teardown
    ActionCable.instance_variable_set(:@server, @previous_server)
  end

  # The Cookie header a Rails controller's `cookies.encrypted[:user_id] = id` sets.
  def signed_in_cookie(user_id)
    request = ActionDispatch::Request.new(ENV_CONFIG.merge(Rack::MockRequest.env_for("/")))
    request.cookie_jar.encrypted[:user_id] = user_id
    headers = {}
    request.cookie_jar.write(headers)
    headers["Set-Cookie"].split(";").first
  end

  def env(cookie, istate: nil, cstate: nil)
    env = { "url" => URL, "headers" => { "REMOTE_ADDR" => "127.0.0.1", "cookie" => cookie } }
    env["cstate"] = cstate if cstate
    env["istate"] = istate if istate
    env
  end

  def rpc(path, body, secret: SECRET, sid: nil)
    headers = { "CONTENT_TYPE" => "application/json", input: body }
    headers["HTTP_AUTHORIZATION"] = "Bearer #{secret}" if secret
    headers["HTTP_X_ANYCABLE_META_SID"] = sid if sid
    Rack::MockRequest.new(@endpoint).post(path, headers)
  end

  def command(command, identifier, cookie, data: nil, istate: nil, sid: nil)
    body = { "command" => command, "identifier" => identifier, "connection_identifiers" => ALICE_IDS }
    body["data"] = data if data
    body["env"] = env(cookie, istate: istate, cstate: { "locale" => '"fr"' })
    rpc("/command", JSON.generate(body), sid: sid)
  end

  def lobby_stream = "chat:#{RPCRoom.find(1).to_gid_param}"

  def events
    out = []
    out << RPC_EVENTS.pop until RPC_EVENTS.empty?
    out
  end

  def test_connect_signs_in_from_the_encrypted_cookie
    response = rpc("/connect", JSON.generate("env" => env(signed_in_cookie(1))), sid: "sid-1")
    assert_equal 200, response.status
    assert_equal "application/json", response.headers["Content-Type"]
    assert_equal '{"status":1,"identifiers":"{\"current_user\":\"Z2lkOi8vcnBjLXRlc3QvUlBDVXNlci8x\"}",' \
                 '"transmissions":["{\"type\":\"welcome\",\"sid\":\"sid-1\"}"],"env":{"cstate":{"locale":"\"fr\""}}}',
                 response.body
  end

  def test_a_forged_or_missing_cookie_is_refused_as_action_cable_refuses_it
    unauthorized = '{"status":2,"transmissions":["{\"type\":\"disconnect\",\"reason\":\"unauthorized\",' \
                   '\"reconnect\":false}"]}'
    forged = signed_in_cookie(1).sub(/=(.)/) { "=#{Regexp.last_match(1) == 'A' ? 'B' : 'A'}" }
    assert_equal unauthorized, rpc("/connect", JSON.generate("env" => env(forged))).body
    assert_equal unauthorized, rpc("/connect", JSON.generate("env" => env(""))).body
    assert_equal unauthorized, rpc("/connect", JSON.generate("env" => { "url" => URL })).body
  end

  def test_middleware_fills_the_env_the_connection_reads
    endpoint = Pushgate::Cable::RPC.new(secret: SECRET, connection_class: RPCTestCable::EnvConnection, server: @server,
                                        middleware: [[UserFromHeader, "HTTP_X_USER", ->(value) { value&.to_i }]])
    body = JSON.generate("env" => { "url" => URL, "headers" => { "x-user" => "2" } })
    response = Rack::MockRequest.new(endpoint).post("/connect", input: body, "HTTP_AUTHORIZATION" => "Bearer #{SECRET}")
    assert_equal '{"status":1,"identifiers":"{\"current_user\":\"' + RPCUser.find(2).to_gid_param +
                 '\"}","transmissions":["{\"type\":\"welcome\"}"]}', response.body
  end

  def test_an_origin_action_cable_does_not_allow_is_refused
    request = env(signed_in_cookie(1))
    request["headers"]["origin"] = "http://evil.example"
    assert_equal '{"status":2,"transmissions":["{\"type\":\"disconnect\",\"reason\":\"invalid_request\",' \
                 '\"reconnect\":true}"]}', rpc("/connect", JSON.generate("env" => request)).body
  end

  def test_subscribe_streams_for_the_room_transmits_and_confirms
    response = command("subscribe", LOBBY, signed_in_cookie(1))
    expected = '{"status":1,"streams":[' + lobby_stream.to_json + '],"transmissions":[' +
               JSON.generate(JSON.generate("identifier" => LOBBY, "message" => { "text" => "welcome to lobby, alice" })) +
               "," + JSON.generate(JSON.generate("identifier" => LOBBY, "type" => "confirm_subscription")) +
               '],"env":{"istate":{"$p":' + lobby_stream.to_json + ',"$w":' + lobby_stream.to_json +
               ',"room":"\"Z2lkOi8vcnBjLXRlc3QvUlBDUm9vbS8x\""}},' \
               '"presence":{"type":"join","id":"1","info":"{\"name\":\"alice\"}"}}'
    assert_equal expected, response.body
  end

  def test_a_forbidden_room_is_rejected_and_unsubscribed_runs
    response = command("subscribe", STAFF, signed_in_cookie(1))
    assert_equal '{"status":2,"stop_streams":true,"transmissions":[' +
                 JSON.generate(JSON.generate("identifier" => STAFF, "type" => "reject_subscription")) +
                 '],"env":{"istate":{"room":"\"Z2lkOi8vcnBjLXRlc3QvUlBDUm9vbS8y\""}}}', response.body
    assert_equal [[:unsubscribed, "alice", "staff only"]], events
  end

  def test_perform_speak_restores_the_user_and_the_room_and_broadcasts_to_the_others
    istate = { "room" => '"gid://rpc-test/RPCRoom/1"', "$w" => lobby_stream }
    response = command("message", LOBBY, signed_in_cookie(1), data: '{"action":"speak","text":"hi <all>"}',
                                                               istate: istate, sid: "sid-alice")
    assert_equal '{"status":1}', response.body
    assert_equal [[:speak, "alice", "lobby", "hi <all>"]], events
    envelope = NSQD.read_back(@topic, 1).first
    assert_equal({ "channel" => lobby_stream, "data" => { "from" => "alice", "text" => "hi <all>" },
                   "exclude" => "sid-alice" }, envelope.except("id"))
  end

  def test_a_stop_and_a_presence_leave_are_answered
    istate = { "room" => '"gid://rpc-test/RPCRoom/1"', "$w" => lobby_stream, "$p" => lobby_stream }
    response = command("message", LOBBY, signed_in_cookie(1), data: '{"action":"leave"}', istate: istate)
    assert_equal '{"status":1,"env":{"istate":{"$w":""}},"stopped_streams":[' + lobby_stream.to_json +
                 '],"presence":{"type":"leave","id":"1"}}', response.body
  end

  def test_unsubscribe_runs_unsubscribed_and_stops_the_streams
    response = command("unsubscribe", LOBBY, signed_in_cookie(1), istate: { "room" => '"gid://rpc-test/RPCRoom/1"' })
    assert_equal '{"status":1,"stop_streams":true}', response.body
    assert_equal [[:unsubscribed, "alice", "lobby"]], events
  end

  def test_disconnect_runs_every_unsubscribed_then_disconnect
    body = { "identifiers" => ALICE_IDS, "subscriptions" => [LOBBY, '{"channel":"GoneChannel"}'],
             "env" => env(signed_in_cookie(1), cstate: { "locale" => '"fr"' },
                          istate: { LOBBY => '{"room":"\"gid://rpc-test/RPCRoom/1\""}' }) }
    assert_equal '{"status":1}', rpc("/disconnect", JSON.generate(body)).body
    assert_equal [[:unsubscribed, "alice", "lobby"], [:disconnect, "alice", "fr"]], events
  end

  def test_an_unknown_channel_is_rejected_not_left_waiting
    identifier = '{"channel":"Object"}'
    response = command("subscribe", identifier, signed_in_cookie(1))
    assert_equal '{"status":2,"transmissions":[' +
                 JSON.generate(JSON.generate("identifier" => identifier, "type" => "reject_subscription")) +
                 '],"error_msg":"no channel class for identifier {\"channel\":\"Object\"}"}', response.body
  end

  def test_an_exception_in_the_app_is_an_error_answer
    response = command("message", LOBBY, signed_in_cookie(1), data: '{"action":"speak","text":"x"}',
                                                               istate: { "room" => '"gid://rpc-test/RPCRoom/9"' })
    assert_equal '{"error_msg":"ArgumentError: no RPCRoom 9"}', response.body
  end

  def test_the_secret_and_the_request_are_checked
    body = JSON.generate("env" => env(signed_in_cookie(1)))
    assert_equal 401, rpc("/connect", body, secret: nil).status
    assert_equal 401, rpc("/connect", body, secret: "wrong").status
    assert_equal 404, rpc("/subscribe", body).status
    assert_equal 422, rpc("/connect", "").status
    assert_equal 422, rpc("/connect", "[1]").status
    assert_equal 422, rpc("/connect", "{").status
    assert_equal 405, Rack::MockRequest.new(@endpoint).get("/connect").status
    assert_equal '{"error_msg":"unknown command \"whisper\""}', command("whisper", LOBBY, signed_in_cookie(1)).body
    assert_raises(ArgumentError) { Pushgate::Cable::RPC.new(secret: "") }
  end

  # The same channel under Action Cable's own server (its test stub): the
  # hooks fall through, state is a plain attribute, presence a no-op.
  # Whatever arrives, the answer is defined and the next call is served.
  def test_hostile_calls_get_clear_answers
    cookie = signed_in_cookie(1)
    assert_equal 413, rpc("/connect", "{" + " " * Pushgate::Cable::RPC::MAX_BODY_BYTES + "}").status
    assert_equal '{"status":2,"transmissions":["{\"type\":\"disconnect\",\"reason\":\"unauthorized\",' \
                 '\"reconnect\":false}"]}',
                 rpc("/connect", JSON.generate("env" => { "url" => "::not a url", "headers" => ["cookie"] })).body
    garbage_ids = rpc("/command", JSON.generate("command" => "subscribe", "identifier" => LOBBY,
                                                "connection_identifiers" => "[not json", "env" => env(cookie)))
    assert_match(/\A\{"error_msg":"ArgumentError: connection_identifiers is not a JSON object"\}\z/, garbage_ids.body)
    not_json = command("subscribe", "{not json", cookie)
    assert_equal 2, JSON.parse(not_json.body)["status"] # reject_subscription, not silence
    bad_data = command("message", LOBBY, cookie, data: "{not json", istate: { "room" => LOBBY_STATE })
    assert_match(/\A\{"error_msg":"JSON::ParserError: /, bad_data.body)
    odd_state = rpc("/command", JSON.generate("command" => "message", "identifier" => LOBBY, "data" => '{"action":"nope"}',
                                              "connection_identifiers" => ALICE_IDS,
                                              "env" => { "url" => URL, "headers" => { "cookie" => cookie },
                                                         "istate" => "a string", "cstate" => [1] }))
    assert_equal '{"status":1}', odd_state.body # Action Cable logs the unknown action and carries on
    assert_equal 1, JSON.parse(rpc("/connect", JSON.generate("env" => env(cookie))).body)["status"]
  end

  # Go's encoding/json of rpc.proto's structs, as AnyCable-Go writes them:
  # zero values left out, map keys sorted, <, > and & escaped.
  def test_answers_are_gos_json_of_the_proto_structs
    wire = Pushgate::Cable::RPC::Wire
    assert_equal '{"status":1,"transmissions":["{\"message\":\"\u003cp\u003ea \u0026 b\u003c/p\u003e\"}"],' \
                 '"env":{"istate":{"$w":"","a":"1","b":"2"}}}',
                 wire.command_response(status: 1, transmissions: ['{"message":"<p>a & b</p>"}'],
                                       env: { cstate: {}, istate: { "b" => "2", "a" => "1", "$w" => "" } })
    assert_equal '{"error_msg":"boom"}', wire.connection_response(status: 0, error_msg: "boom")
    assert_equal '{"status":2}', wire.disconnect_response(status: 2)
    assert_equal '{"status":1,"presence":{"type":"leave","id":"7"}}',
                 wire.command_response(status: 1, presence: { type: "leave", id: "7" })
  end

  def test_rails_own_server_runs_the_channel_as_before
    require "action_cable/channel/test_case"
    connection = ActionCable::Channel::ConnectionStub.new(current_user: RPCUser.find(1))
    channel = ChatChannel.new(connection, LOBBY, { "room" => 1 }.with_indifferent_access)
    channel.extend(ActionCable::Channel::ChannelStub) # what ActionCable::Channel::TestCase does
    channel.subscribe_to_channel
    assert_equal [lobby_stream], channel.streams
    assert_equal "lobby", channel.room.name
    assert_equal [{ "identifier" => LOBBY, "message" => { "text" => "welcome to lobby, alice" } },
                  { "identifier" => LOBBY, "type" => "confirm_subscription" }],
                 connection.transmissions.map { |t| JSON.parse(t.to_json) }
    assert_nil channel.pushgate_socket
  end
end
