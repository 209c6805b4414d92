# frozen_string_literal: true

# examples/rails booted as the Rails 6.1 application it is (its config/,
# app/channels, app/controllers, app/views), with the models an app would
# have (ActiveRecord on an in-memory SQLite), then called as the gateway
# calls it. Run in a process of its own by examples_rails_test.rb (a Rails
# application is one per process); prints one JSON line of what happened.
$LOAD_PATH.unshift File.expand_path("../../lib", __dir__)
EXAMPLES = File.expand_path("../../../../examples/rails", __dir__)
ENV["DATABASE_URL"] = "sqlite3::memory:"

require "json"
require "rails"
require "active_record/railtie"
require "active_job/railtie" # GlobalID for records, as in every app with rails/all
require "action_controller/railtie"
require "action_view/railtie"
require "action_cable/engine"
require "rack/mock"
require "pushgate"

class ExamplesApp < Rails::Application
  config.root = EXAMPLES
  config.eager_load = false
  config.secret_key_base = "2" * 64
  config.logger = Logger.new(nil)
  config.hosts.clear
end

# The app's models, which the example channel and connection use.
class ApplicationRecord < ActiveRecord::Base
  self.abstract_class = true
end

class User < ApplicationRecord
  def can_enter?(room) = room.name != "staff" || admin
end

class Room < ApplicationRecord
  has_many :messages
end

class Message < ApplicationRecord
  belongs_to :user
  belongs_to :room
  def as_json(*) = { "from" => user.name, "text" => text }
end

Rails.application.initialize!
ActiveRecord::Migration.verbose = false
ActiveRecord::Schema.define do
  create_table(:users) { |t| t.string :name; t.boolean :admin, default: false; t.datetime :last_seen_at; t.datetime :away_since }
  create_table(:rooms) { |t| t.string :name }
  create_table(:messages) { |t| t.references :user; t.references :room; t.string :text }
end
alice = User.create!(name: "alice")
lobby = Room.create!(name: "lobby")
staff = Room.create!(name: "staff")
Message.create!(user: alice, room: lobby, text: "earlier")

request = ActionDispatch::Request.new(Rails.application.env_config.merge(Rack::MockRequest.env_for("/")))
request.cookie_jar.encrypted[:user_id] = alice.id
set_cookie = {}
request.cookie_jar.write(set_cookie)
cookie = set_cookie["Set-Cookie"].split(";").first

app = Rack::MockRequest.new(Rails.application)
call = lambda do |path, body, sid: "sid-alice"|
  response = app.post("/_pushgate/#{path}", input: JSON.generate(body), "CONTENT_TYPE" => "application/json",
                                             "HTTP_AUTHORIZATION" => "Bearer #{ENV.fetch('PUSHGATE_CABLE_RPC_SECRET')}",
                                             "HTTP_X_ANYCABLE_META_SID" => sid)
  JSON.parse(response.body)
end
env = { "url" => "ws://localhost:8000/cable", "headers" => { "REMOTE_ADDR" => "127.0.0.1", "cookie" => cookie } }
room = ->(r) { JSON.generate("channel" => "ChatChannel", "room" => r.id) }

connected = call.call("connect", { "env" => env })
refused = call.call("connect", { "env" => env.merge("headers" => { "cookie" => cookie.sub(/=(.)/, "=x") }) })
ids = connected["identifiers"]
subscribed = call.call("command", { "command" => "subscribe", "identifier" => room.(lobby), "connection_identifiers" => ids,
                                    "env" => env })
rejected = call.call("command", { "command" => "subscribe", "identifier" => room.(staff), "connection_identifiers" => ids,
                                  "env" => env })
istate = subscribed.dig("env", "istate")
spoke = call.call("command", { "command" => "message", "identifier" => room.(lobby), "connection_identifiers" => ids,
                               "data" => JSON.generate("action" => "speak", "text" => "hello"),
                               "env" => env.merge("istate" => istate) })
left = call.call("command", { "command" => "unsubscribe", "identifier" => room.(lobby), "connection_identifiers" => ids,
                              "env" => env.merge("istate" => istate) })
disconnected = call.call("disconnect", { "identifiers" => ids, "subscriptions" => [], "env" => env })
alice.reload

# A controller action broadcasting to the others, under the page's X-Socket-ID.
class NotesController < ApplicationController
  def create
    ActionCable.server.broadcast("notes", { "note" => params[:text] }, to_others: true)
    head :no_content
  end
end
Rails.application.routes.disable_clear_and_finalize = true
Rails.application.routes.draw { post "/notes", to: "notes#create" }
noted = app.post("/notes?text=hi", "HTTP_X_SOCKET_ID" => "sid-page").status

layout = ApplicationController.render(html: "<p>page</p>".html_safe, layout: "application")
cable_route = begin
  Rails.application.routes.recognize_path("/cable")
  true
rescue ActionController::RoutingError
  false
end

puts JSON.generate(
  "connected" => connected, "refused" => refused, "subscribed" => subscribed, "rejected" => rejected,
  "spoke" => spoke, "left" => left, "disconnected" => disconnected,
  "messages" => Message.order(:id).map(&:text), "away" => !alice.away_since.nil?, "seen" => !alice.last_seen_at.nil?,
  "layout" => layout, "cable_route" => cable_route, "noted" => noted, "lobby_stream" => ChatChannel.broadcasting_for(lobby)
)
