# frozen_string_literal: true

# A one-file Rails 6.1 application (Debian's ruby-railties, ruby-actionpack,
# ruby-actionview, ruby-actioncable) using the pushgate bridge as an app
# would: config/cable.yml says `adapter: nsq`, pages carry the bridge's meta
# tag and Turbo stream element, broadcasts go through ActionCable.server.
# Debian has no turbo-rails, so a Turbo Stream broadcast is rendered here as
# turbo-rails' broadcast_append_to renders it.
#
#   ruby app.rb page USER STREAMABLE...       the page, rendered by Action View
#   ruby app.rb sign STREAMABLE...            the signed stream name
#   ruby app.rb append TEXT STREAMABLE...     a Turbo Stream "append" to #messages, broadcast
#   ruby app.rb broadcast STREAM JSON         ActionCable.server.broadcast(STREAM, JSON)
#   ruby app.rb serve PORT                    the chat app under WEBrick (below)
#
# `serve` runs an ordinary Action Cable chat with no JWT anywhere: sign-in is
# an encrypted cookie (GET /login?name=alice), ApplicationCable::Connection
# reads it, ChatChannel streams for its room, rejects a room the user may
# not enter, transmits a greeting, joins the room's presence, names the
# room for whispers, broadcasts `speak`, and records `unsubscribed`; the gateway runs them through Pushgate::Cable::RPC mounted
# at /_pushgate. GET /rooms/ID?cable=WS_URL is a page with the stock
# @rails/actioncable (from node_modules) connected to that gateway node.
# What the app's callbacks did goes as JSON lines to CHAT_EVENTS (a file).
#
# Settings come from the environment: PUSHGATE_CABLE_URL, PUSHGATE_JWT_SECRET,
# PUSHGATE_TURBO_STREAMS_SECRET, PUSHGATE_NSQD_HTTP_ADDRESS, CABLE_CHANNEL_PREFIX,
# PUSHGATE_CABLE_RPC_SECRET, CHAT_EVENTS.
$LOAD_PATH.unshift File.expand_path("../../../bridges/rails/lib", __dir__)

require "rails"
require "action_controller/railtie"
require "action_view/railtie"
require "action_cable/engine"
require "globalid"
require "pushgate"

class CableApp < Rails::Application
  config.root = __dir__
  config.eager_load = false
  config.secret_key_base = "0" * 64
  config.logger = Logger.new($stderr)
  config.log_level = :warn
  config.hosts.clear
  config.action_cable.mount_path = nil # the gateway serves /cable
end

# What the app's callbacks did, one JSON line each, for the tests to read.
module ChatEvents
  LOCK = Mutex.new

  def self.record(**event)
    path = ENV["CHAT_EVENTS"] or return
    LOCK.synchronize { File.open(path, "a") { |f| f.puts(JSON.generate(event)) } }
  end
end

# Records as an app's models would be, found by id and by GlobalID.
class Record
  include GlobalID::Identification
  attr_reader :id, :name

  def initialize(id, name)
    @id = id
    @name = name
  end

  def self.find(id) = self::ALL.fetch(Integer(id))
  def self.find_by(id) = Integer(id, exception: false).then { |i| i && self::ALL[i] }
end

class User < Record
  ALL = { 1 => new(1, "alice"), 2 => new(2, "bob"), 3 => new(3, "carol") }.freeze

  def self.named(name) = ALL.values.find { |user| user.name == name }
end

class Room < Record
  ALL = { 1 => new(1, "lobby"), 2 => new(2, "staff") }.freeze

  def open_to?(user) = id != 2 || user.name == "bob"
end

module ApplicationCable
  class Connection < ActionCable::Connection::Base
    identified_by :current_user

    def connect
      self.current_user = User.find_by(cookies.encrypted[:user_id])
      if current_user.nil?
        ChatEvents.record(event: "refused")
        reject_unauthorized_connection
      end
      ChatEvents.record(event: "connect", user: current_user.name)
    end

    def disconnect
      ChatEvents.record(event: "disconnect", user: current_user.name)
    end
  end

  class Channel < ActionCable::Channel::Base
  end
end

class ChatChannel < ApplicationCable::Channel
  include Pushgate::Cable::Presence

  def subscribed
    room = Room.find_by(params[:room])
    unless room&.open_to?(current_user)
      ChatEvents.record(event: "rejected", user: current_user.name, room: params[:room])
      return reject
    end

    stream_for room, whisper: true # @anycable/web's whispers go to the room (gateway's --cable-whisper)
    transmit({ "greeting" => "welcome to #{room.name}, #{current_user.name}" })
    join_presence(id: current_user.id, info: { "name" => current_user.name })
    ChatEvents.record(event: "subscribed", user: current_user.name, room: room.id)
  end

  def speak(data)
    message = { "from" => current_user.name, "text" => data["text"] }
    ChatChannel.broadcast_to(Room.find(params[:room]), message, to_others: data["others"] == true)
  end

  def unsubscribed
    ChatEvents.record(event: "unsubscribed", user: current_user.name, room: params[:room])
  end
end

class SessionsController < ActionController::Base
  def create
    cookies.encrypted[:user_id] = User.named(params[:name])&.id
    render plain: "signed in as #{params[:name]}"
  end
end

class RoomsController < ActionController::Base
  ROOM = <<~ERB
    <!DOCTYPE html>
    <html>
    <head>
      <meta charset="utf-8">
      <title>Chat</title>
      <meta name="action-cable-url" content="<%= cable %>">
      <script type="module">
        import { createConsumer } from "/actioncable.js"
        const report = (event, fields = {}) => window.__report && window.__report(event, fields)
        const consumer = createConsumer()
        window.chat = consumer.subscriptions.create({ channel: "ChatChannel", room: <%= room %> }, {
          connected() { report("connected") },
          rejected() { report("rejected") },
          disconnected(details) { report("disconnected", details || {}) },
          received(data) { report("received", { data }) },
        })
        window.speak = (text, others = false) => window.chat.perform("speak", { text, others })
      </script>
    </head>
    <body><h1>Room <%= room %></h1></body>
    </html>
  ERB

  def show
    render inline: ROOM, locals: { cable: params[:cable].to_s, room: Integer(params[:id]) }
  end
end

ACTIONCABLE_JS = File.expand_path("../../../node_modules/@rails/actioncable/app/assets/javascripts/actioncable.esm.js",
                                  __dir__)

# For bench/rails_rpc.py: the time spent inside the RPC endpoint, per call.
RPC_TIMINGS = []
if ENV["RPC_TIMINGS"]
  ActiveSupport::Notifications.subscribe("call.pushgate_cable_rpc") do |_name, started, finished, _id, payload|
    ChatEvents::LOCK.synchronize do
      RPC_TIMINGS << [payload[:command] || payload[:call], (finished - started) * 1000.0]
      RPC_TIMINGS.shift if RPC_TIMINGS.size > 1_000_000
    end
  end
end

Rails.application.initialize!
Rails.application.routes.draw do
  get "/bench/rpc_timings", to: lambda { |_env|
    taken = ChatEvents::LOCK.synchronize { RPC_TIMINGS.dup.tap { RPC_TIMINGS.clear } }
    [200, { "Content-Type" => "application/json" }, [JSON.generate(taken)]]
  } if ENV["RPC_TIMINGS"]
  get "/up", to: ->(_env) { [200, { "Content-Type" => "text/plain" }, ["up"]] }
  mount Pushgate::Cable::RPC.new(secret: ENV.fetch("PUSHGATE_CABLE_RPC_SECRET", "")) => "/_pushgate" if
    ENV["PUSHGATE_CABLE_RPC_SECRET"]
  get "/login", to: "sessions#create"
  get "/rooms/:id", to: "rooms#show"
  get "/actioncable.js", to: ->(_env) { [200, { "Content-Type" => "text/javascript" }, [File.read(ACTIONCABLE_JS)]] }
end

PAGE = <<~ERB
  <!DOCTYPE html>
  <html>
  <head>
    <meta charset="utf-8">
    <title>Room</title>
    <%= pushgate_cable_meta_tag(user) %>
    <script type="module" src="/turbo-rails.js"></script>
  </head>
  <body>
    <h1>Room</h1>
    <%= pushgate_turbo_stream_from(*streamables) %>
    <div id="messages"></div>
  </body>
  </html>
ERB

APPEND = <<~ERB
  <turbo-stream action="append" target="messages"><template><p><%= text %></p></template></turbo-stream>
ERB

case ARGV.shift
when "page"
  user = ARGV.shift
  puts ActionController::Base.render(inline: PAGE, locals: { user: user, streamables: ARGV })
when "sign"
  puts Pushgate::Cable.signed_stream_name(*ARGV)
when "append"
  text = ARGV.shift
  html = ActionController::Base.render(inline: APPEND, locals: { text: text })
  ActionCable.server.broadcast(Pushgate::Cable.stream_name_from(ARGV), html)
  print html
when "broadcast"
  stream, json = ARGV
  ActionCable.server.broadcast(stream, JSON.parse(json))
  puts "broadcast"
when "serve"
  require "rack/handler/webrick"
  port = Integer(ARGV.shift)
  # WEBrick writes a response's head and body apart; without TCP_NODELAY the
  # body waits for the client's delayed ACK (40 ms) on every keep-alive call.
  nodelay = ->(socket) { socket.setsockopt(Socket::IPPROTO_TCP, Socket::TCP_NODELAY, 1) }
  Rack::Handler::WEBrick.run(Rails.application, Host: "127.0.0.1", Port: port, AccessLog: [],
                                                Logger: WEBrick::Log.new($stderr, WEBrick::Log::WARN),
                                                AcceptCallback: nodelay,
                                                StartCallback: -> { puts "serving on #{port}"; $stdout.flush })
else
  warn "usage: app.rb page USER STREAMABLE... | sign STREAMABLE... | append TEXT STREAMABLE... | broadcast STREAM JSON | serve PORT"
  exit 2
end
